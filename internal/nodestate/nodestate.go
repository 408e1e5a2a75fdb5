// Package nodestate turns what the operator read from ZooKeeper about one service into the
// per-node entries of its RollingDeployNodeSets, splits them into shards of bounded size, and
// merges shards back for readers. It talks to no API server and no ZooKeeper.
package nodestate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// progressSteps is how many steps download progress is rounded to: a node's download changes
// its entry at most this many times.
const progressSteps = 20

// HoldPrefix starts the message of a staged node whose own check (its preStopCheck, the alert
// gate) said "not now": kubectl rollkeeper can-stop reports it.
const HoldPrefix = "holds: "

// OriginMessage explains a Downloading node that fetches from the origin directly.
const OriginMessage = "from the origin: no torrent within --torrent-wait"

// Entries derives one entry per node of the service from o (Service, Target and Selected set):
// every selected node, plus nodes that are registered, staged or downloading without being
// selected (their labels changed). Sorted by name.
func Entries(o plan.Observation) []v1alpha1.NodeEntry {
	type node struct {
		online, unreadable bool
		selected           bool
		version            string
		current            *zklayout.Current
		staged             *zklayout.Staged
		progress           *zklayout.Progress
		failure            *zklayout.Failure
	}
	nodes := map[string]*node{}
	get := func(name string) *node {
		n, ok := nodes[name]
		if !ok {
			n = &node{}
			nodes[name] = n
		}
		return n
	}
	for _, name := range o.Selected {
		get(name).selected = true
	}
	for i := range o.Current {
		c := &o.Current[i]
		n := get(c.Node)
		n.online, n.version, n.current = true, c.Version, c
	}
	for _, name := range o.CurrentUnreadable {
		n := get(name)
		n.online, n.unreadable = true, true
	}
	for i := range o.Staged {
		s := &o.Staged[i]
		n := get(s.Node)
		// A node has one staging child; a stale one of an old session may linger: upgrading wins.
		if n.staged == nil || s.State == zklayout.StagedUpgrading {
			n.staged = s
		}
	}
	for i := range o.Progress {
		p := &o.Progress[i]
		if p.Version == o.Target && p.Done < p.Total {
			get(p.Node).progress = p
		}
	}
	for i := range o.Failures {
		f := &o.Failures[i]
		// Only nodes already known: the seeder reports origin failures under a pseudo-node.
		if n, ok := nodes[f.Node]; ok && f.Version == o.Target {
			n.failure = f
		}
	}

	out := make([]v1alpha1.NodeEntry, 0, len(nodes))
	for name, n := range nodes {
		e := v1alpha1.NodeEntry{Name: name, Version: n.version, Online: n.online}
		switch {
		case n.staged != nil && n.staged.State == zklayout.StagedUpgrading:
			e.State, e.Version = v1alpha1.NodeUpgrading, n.staged.Version
		case n.failure != nil:
			e.State = v1alpha1.NodeFailed
			e.Message = n.failure.Kind + ": " + n.failure.Reason
		case !n.online:
			e.State = v1alpha1.NodeUnreachable
		case n.version == o.Target && !n.unreadable:
			e.State = v1alpha1.NodeUpdated
		case n.staged != nil:
			e.State = v1alpha1.NodeStaged
			if n.staged.Hold != "" {
				e.Message = HoldPrefix + n.staged.Hold
			}
		case n.progress != nil:
			e.State = v1alpha1.NodeDownloading
			e.DownloadedBytes, e.TotalBytes = roundProgress(n.progress.Done, n.progress.Total), n.progress.Total
			if n.progress.Source == zklayout.ProgressSourceOrigin {
				e.Message = OriginMessage
			}
		default:
			e.State = v1alpha1.NodeRunning
		}
		switch {
		case n.unreadable:
			e.Message = "registration in ZooKeeper is unreadable"
		case !n.selected && e.Message == "":
			// Registered (or staged) although the nodeSelector does not select it: not counted.
			e.Message = "not selected by the service's nodeSelector"
		}
		if c := n.current; c != nil {
			e.Address = clip(sanitize(c.Address), v1alpha1.MaxNodeAddressLength)
			if !c.Since.IsZero() {
				// Seconds, as the API server stores it, so a re-read entry compares equal.
				e.Since = &metav1.Time{Time: c.Since.UTC().Truncate(time.Second)}
			}
			e.Zone = clip(sanitize(c.Labels[v1alpha1.LabelZone]), v1alpha1.MaxNodeTopologyLength)
			e.Rack = clip(sanitize(c.Labels[v1alpha1.LabelRack]), v1alpha1.MaxNodeTopologyLength)
		}
		e.Version = clip(e.Version, v1alpha1.MaxNodeVersionLength)
		e.Message = clip(sanitize(e.Message), v1alpha1.MaxNodeMessageLength)
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func roundProgress(done, total int64) int64 {
	step := total / progressSteps
	if step <= 0 {
		return done
	}
	return done / step * step
}

// sanitize keeps printable ASCII, without the characters JSON encoders may escape to six bytes
// (<, >, &), so a message's stored size is its length.
func sanitize(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if !space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = true
			continue
		case r < 0x20 || r > 0x7e || r == '<' || r == '>' || r == '&' || r == '"' || r == '\\':
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
		space = false
	}
	return strings.TrimSpace(b.String())
}

// clip truncates s to n bytes, marking the cut with "...". s must be ASCII (sanitize) or
// shorter than n.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// ShardName names shard i of service svc of RollingDeploy rd: <rd>-<svc>-<i>, shortened with a
// hash when that would exceed an object name's 253 characters.
func ShardName(rd, svc string, i int) string {
	name := fmt.Sprintf("%s-%s-%d", rd, svc, i)
	if len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(rd))
	suffix := fmt.Sprintf("-%s-%s-%d", hex.EncodeToString(sum[:])[:10], svc, i)
	return strings.TrimRight(rd[:validation.DNS1123SubdomainMaxLength-len(suffix)], ".-") + suffix
}

// Labels are the labels of every shard of service svc of RollingDeploy rd (uid): the UID and
// the service always, the name when it fits a label value.
func Labels(rd string, uid types.UID, svc string) map[string]string {
	l := map[string]string{v1alpha1.LabelRollingDeployUID: string(uid), v1alpha1.LabelService: svc}
	if len(validation.IsValidLabelValue(rd)) == 0 {
		l[v1alpha1.LabelRollingDeploy] = rd
	}
	return l
}

// Shards splits a service's sorted entries into RollingDeployNodeSets of at most
// MaxNodeSetEntries (at least one, so an empty service is mirrored too). Owner references are
// left to the caller.
func Shards(rd string, uid types.UID, svc, target string, entries []v1alpha1.NodeEntry) []v1alpha1.RollingDeployNodeSet {
	n := max(1, (len(entries)+v1alpha1.MaxNodeSetEntries-1)/v1alpha1.MaxNodeSetEntries)
	out := make([]v1alpha1.RollingDeployNodeSet, n)
	for i := range out {
		lo := min(i*v1alpha1.MaxNodeSetEntries, len(entries))
		hi := min(lo+v1alpha1.MaxNodeSetEntries, len(entries))
		s := &out[i]
		s.APIVersion, s.Kind = v1alpha1.GroupVersion.String(), "RollingDeployNodeSet"
		s.Name = ShardName(rd, svc, i)
		s.Labels = Labels(rd, uid, svc)
		s.RollingDeploy, s.Service, s.TargetVersion = rd, svc, target
		s.Shard, s.Shards, s.TotalNodes = int32(i), int32(n), int32(len(entries))
		if hi > lo {
			s.Nodes = append([]v1alpha1.NodeEntry(nil), entries[lo:hi]...)
		}
	}
	return out
}

// SameContent reports whether have already says what want says: the mirrored fields, want's
// labels and owner references. Other metadata (resourceVersion, managedFields) is ignored.
func SameContent(have, want *v1alpha1.RollingDeployNodeSet) bool {
	for k, v := range want.Labels {
		if have.Labels[k] != v {
			return false
		}
	}
	return have.RollingDeploy == want.RollingDeploy && have.Service == want.Service &&
		have.TargetVersion == want.TargetVersion && have.Shard == want.Shard && have.Shards == want.Shards &&
		have.TotalNodes == want.TotalNodes && slices.EqualFunc(have.Nodes, want.Nodes, sameEntry) &&
		reflect.DeepEqual(have.OwnerReferences, want.OwnerReferences)
}

// sameEntry compares two entries; Since by instant (a decoded time has another location).
func sameEntry(a, b v1alpha1.NodeEntry) bool {
	as, bs := a.Since, b.Since
	a.Since, b.Since = nil, nil
	if a != b || (as == nil) != (bs == nil) {
		return false
	}
	return as == nil || as.Time.Equal(bs.Time)
}

// Service is one service's mirrored nodes, merged from its shards.
type Service struct {
	Name          string
	TargetVersion string
	Nodes         []v1alpha1.NodeEntry
	// Incomplete says a shard is missing or the shards disagree (a write was under way): the
	// nodes shown may be partial.
	Incomplete bool
}

// Merge groups shards (of one RollingDeploy) by service and concatenates their nodes, sorted.
func Merge(sets []v1alpha1.RollingDeployNodeSet) map[string]*Service {
	out := map[string]*Service{}
	seen := map[string]map[int32]bool{}
	shards := map[string]int32{}
	for i := range sets {
		s := &sets[i]
		svc, ok := out[s.Service]
		if !ok {
			svc = &Service{Name: s.Service, TargetVersion: s.TargetVersion}
			out[s.Service] = svc
			seen[s.Service] = map[int32]bool{}
			shards[s.Service] = s.Shards
		}
		if s.Shards != shards[s.Service] || s.TargetVersion != svc.TargetVersion || seen[s.Service][s.Shard] {
			svc.Incomplete = true
		}
		seen[s.Service][s.Shard] = true
		svc.Nodes = append(svc.Nodes, s.Nodes...)
	}
	for name, svc := range out {
		if int32(len(seen[name])) != shards[name] {
			svc.Incomplete = true
		}
		sort.Slice(svc.Nodes, func(i, j int) bool { return svc.Nodes[i].Name < svc.Nodes[j].Name })
	}
	return out
}
