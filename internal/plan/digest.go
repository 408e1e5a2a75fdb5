package plan

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// MaxListedNodes caps the node names a status lists.
const MaxListedNodes = 20

// Observation is what the operator read about one service.
type Observation struct {
	Service string
	// Target is the version the plan rolls out, and Artifact its artifact.
	Target   string
	Artifact v1alpha1.ArtifactSpec
	// MinAvailable is the resolved quorum.
	MinAvailable int
	// Selected are the names of the Nodes the service's nodeSelector matches.
	Selected []string
	// MinStaged is the resolved distribution gate; nil means every online node.
	MinStaged *int
	// Progress are the decoded progress/<svc> children (nodes downloading).
	Progress []zklayout.Progress
	// Current are the decoded current/<svc> registrations.
	Current []zklayout.Current
	// CurrentUnreadable are current/<svc> children whose payload could not be decoded: the
	// nodes are online, but nobody knows on which version.
	CurrentUnreadable []string
	// Staged are the decoded staging/<svc> queue children agents made (ephemeral). Queued
	// counts every staging child agents made, readable or not (rollout.Queued).
	Staged []zklayout.Staged
	Queued int
	// Selector is the plan's node selector: completion counts the registrations it selects,
	// as the agents do (rollout.Selected).
	Selector string
	// Failures are the decoded failures/<svc> children.
	Failures []zklayout.Failure
	// Malformed describes every znode of the service whose payload could not be read.
	Malformed []string
	// Plan is the service's plan as read (nil: none), Now the time of the reading: the gates
	// beyond the quorum are judged from them, as the agents judge them.
	Plan *zklayout.Plan
	Now  time.Time
}

// Complete applies the agents' completion rule (rollout.Complete) to what was read: is the
// service's rollout to target done, with quorum minAvailable and selected nodes selected?
func (o Observation) Complete(target string, minAvailable, selected int) bool {
	return rollout.Complete(target, rollout.Selected(o.Current, o.Selector), len(o.CurrentUnreadable), o.Queued,
		rollout.NeedOnline(minAvailable, selected), o.tolerated(target))
}

// tolerated are the nodes whose failure of target's health check the plan tolerates
// (maxFailures): none once there are more (the rollout halted).
func (o Observation) tolerated(target string) map[string]bool {
	if o.Plan == nil || o.Plan.Version != target {
		return nil
	}
	failed := rollout.Failed(o.Plan, o.Failures)
	if len(failed) > o.Plan.MaxFailures {
		return nil
	}
	return failed
}

// Digest is the rollout state of one service derived from an Observation.
type Digest struct {
	Status v1alpha1.ServiceStatus
	// Complete: every online node runs the target and none is upgrading.
	Complete bool
	// HealthFailures and ArtifactFailures are the failures recorded for the target version.
	HealthFailures   []zklayout.Failure
	ArtifactFailures []zklayout.Failure
	// AgentFailures are agent steps that panicked (an agent bug), whatever the version: they are
	// reported, never halt the rollout (the agent backs off and goes on).
	AgentFailures []zklayout.Failure
	// SignatureFailures are nodes that refused an unsigned or wrongly signed plan, release or
	// deploy entry, whatever the version: reported, the agent acts on none of it.
	SignatureFailures []zklayout.Failure
	// Artifact is the target's artifact (for failure messages).
	Artifact v1alpha1.ArtifactSpec
	// Malformed describes the service's unreadable znodes (reported, never acted on).
	Malformed []string
	// Unselected are registered nodes (current/<svc>/<node>) the service's nodeSelector does
	// not select: reported, and left out of the Online and Updated counts.
	Unselected []string
	// NotStaged are the online nodes that have neither staged nor run the target while the
	// distribution gate is closed (nil when it is open), at most MaxListedNodes.
	NotStaged []string
	// MaxFailures is the plan's tolerance of failed health checks (HealthFailures beyond it
	// halt the rollout).
	MaxFailures int
	// GateWait says why a gate beyond the quorum holds the service's first waiter ("": none);
	// GateOpens is when a closed maintenance window opens.
	GateWait  string
	GateOpens time.Time
}

// DigestService counts an Observation into a ServiceStatus (counts only; Position, Phase and
// Message are left for Phase) and collects the failures recorded for the target version.
func DigestService(o Observation) Digest {
	st := v1alpha1.ServiceStatus{
		Name:          o.Service,
		TargetVersion: o.Target,
		MinAvailable:  int32(o.MinAvailable),
		Total:         int32(len(o.Selected)),
	}
	isSelected := make(map[string]bool, len(o.Selected))
	for _, n := range o.Selected {
		isSelected[n] = true
	}
	var unselected []string
	online := map[string]bool{}
	onTarget := map[string]bool{}
	for _, c := range o.Current {
		online[c.Node] = true
		if c.Version == o.Target {
			onTarget[c.Node] = true
		}
		if !isSelected[c.Node] {
			unselected = append(unselected, c.Node)
			continue
		}
		st.Online++
		if c.Version == o.Target {
			st.Updated++
		}
	}
	for _, n := range o.CurrentUnreadable {
		online[n] = true
		if !isSelected[n] {
			unselected = append(unselected, n)
			continue
		}
		st.Online++
	}
	upgrading := map[string]bool{}
	staged := map[string]bool{}
	for _, s := range o.Staged {
		if s.Version == o.Target {
			st.Staged++
			staged[s.Node] = true
		}
		if s.State == zklayout.StagedUpgrading {
			st.Upgrading++
			upgrading[s.Node] = true
		}
	}
	selected := append([]string(nil), o.Selected...)
	sort.Strings(selected)
	for _, n := range selected {
		if online[n] || upgrading[n] {
			continue
		}
		st.Unreachable++
		if len(st.UnreachableNodes) < MaxListedNodes {
			st.UnreachableNodes = append(st.UnreachableNodes, n)
		}
	}
	d := Digest{Artifact: o.Artifact, Malformed: o.Malformed, Complete: o.Complete(o.Target, o.MinAvailable, len(o.Selected))}
	if o.Plan != nil && o.Plan.Version == o.Target {
		d.MaxFailures = o.Plan.MaxFailures
	}
	sort.Strings(unselected)
	d.Unselected = unselected
	// The gate counts as the agents do (every registration, selected or not): a node has the
	// target when it has staged it or runs it.
	st.StagedRequired = int32(len(o.Current) + len(o.CurrentUnreadable))
	if o.MinStaged != nil {
		st.StagedRequired = int32(*o.MinStaged)
	}
	if !d.Complete {
		// As the agents count: a node whose failure maxFailures tolerates never stages again.
		for n := range o.tolerated(o.Target) {
			onTarget[n] = true
		}
		d.NotStaged = notStaged(online, onTarget, staged, int(st.StagedRequired), o.MinStaged == nil)
	}
	for _, s := range o.Staged {
		if s.Version == o.Target {
			st.PinnedBytes += s.PinnedBytes
		}
	}
	for _, p := range o.Progress {
		if p.Version == o.Target && p.Done < p.Total {
			st.Downloading++
			if p.Source == zklayout.ProgressSourceOrigin {
				st.DownloadingFromOrigin++
			}
			st.DownloadedBytes += p.Done
			st.DownloadTotalBytes += p.Total
		}
	}
	failures := append([]zklayout.Failure(nil), o.Failures...)
	sort.Slice(failures, func(i, j int) bool { return failures[i].Node < failures[j].Node })
	for _, f := range failures {
		switch f.Kind {
		case zklayout.FailureAgent:
			d.AgentFailures = append(d.AgentFailures, f)
			continue
		case zklayout.FailureSignature:
			d.SignatureFailures = append(d.SignatureFailures, f)
			continue
		}
		if f.Version != o.Target {
			continue // left over from an older plan; cleared when the plan changed
		}
		st.Failed++
		if len(st.FailedNodes) < MaxListedNodes {
			st.FailedNodes = append(st.FailedNodes, v1alpha1.NodeFailure{Node: f.Node, Version: f.Version, Kind: f.Kind, Reason: f.Reason})
		}
		if f.Kind == zklayout.FailureArtifact {
			d.ArtifactFailures = append(d.ArtifactFailures, f)
		} else {
			d.HealthFailures = append(d.HealthFailures, f)
		}
	}
	d.Status = st
	if !d.Complete {
		d.GateWait, d.Status.Gate, d.GateOpens = gateWait(o)
		d.Status.Waiting = d.GateWait
	}
	return d
}

// gateWait applies the agents' gates (rollout.Gates) to what the operator read: the queue's
// first ready node for the target is the one they hold. With nobody queued, only a closed
// window is reported (it will hold the first).
func gateWait(o Observation) (wait, gate string, opens time.Time) {
	if o.Plan == nil || o.Plan.Version != o.Target {
		return "", "", time.Time{}
	}
	p := o.Plan
	online := map[string]string{}
	in := rollout.GateInput{Plan: p, Now: o.Now, Online: online, Target: o.Target, OnTarget: map[string]time.Time{}}
	for _, c := range rollout.Selected(o.Current, p.Selector) {
		online[c.Node] = rollout.DomainOf(p, c.Labels)
		if c.Version == o.Target {
			in.OnTarget[c.Node] = c.Since
		}
	}
	first := false
	var firstHold, firstNode string
	for _, s := range o.Staged {
		switch {
		case s.State == zklayout.StagedUpgrading:
			if _, back := online[s.Node]; !back {
				in.InFlight = append(in.InFlight, rollout.Flight{Node: s.Node, Domain: s.Domain})
			}
		case s.Version != o.Target:
		case !first:
			first, in.Domain, firstHold, firstNode = true, s.Domain, s.Hold, s.Node
		default:
			in.Queued = append(in.Queued, rollout.Flight{Node: s.Node, Domain: s.Domain})
		}
	}
	if !first {
		w, at := rollout.Window(p, o.Now)
		if w == "" {
			return "", "", time.Time{}
		}
		return w, rollout.GateWindow, at
	}
	r := rollout.Gates(in)
	if r.Wait == "" && firstHold != "" {
		// The first waiter passed the gates and asked its own: "<gate>: <why>".
		gate, _, _ := strings.Cut(firstHold, ":")
		return firstNode + " " + firstHold, gate, time.Time{}
	}
	return r.Wait, r.Gate, r.RetryAt
}

// notStaged lists the online nodes (sorted, at most MaxListedNodes) that neither staged nor run
// the target when fewer than required nodes have it, counted as the agents count it (with the
// default gate, only online nodes count); nil when the gate is open.
func notStaged(online, onTarget, staged map[string]bool, required int, onlyOnline bool) []string {
	have := 0
	for n := range online {
		if onTarget[n] || staged[n] {
			have++
		}
	}
	if !onlyOnline {
		for n := range staged {
			if !online[n] {
				have++
			}
		}
	}
	if have >= required {
		return nil
	}
	var out []string
	for n := range online {
		if !onTarget[n] && !staged[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return firstN(out, MaxListedNodes)
}

// PhaseInput is the RollingDeploy-wide context of a service's phase.
type PhaseInput struct {
	Paused bool
	// WaitingFor are the incomplete services ahead of this one in the deploy order.
	WaitingFor []string
	// BlockedBy, when set, says which deploy queue entry ahead of this service's holds it
	// (a malformed entry, or another RollingDeploy's service heading the queue).
	BlockedBy string
}

// Phase sets the service's phase and message from its digest.
func Phase(d *Digest, in PhaseInput) {
	st := &d.Status
	var msg []string
	switch {
	case d.Complete && len(d.HealthFailures) > 0:
		st.Phase = v1alpha1.PhaseComplete
		msg = append(msg, fmt.Sprintf("%d online node(s) run %s; %s, rolled back and kept their version (maxFailures %d)",
			st.Updated, st.TargetVersion, HealthFailureMessage(st.Name, d.HealthFailures), d.MaxFailures))
	case d.Complete:
		st.Phase = v1alpha1.PhaseComplete
		msg = append(msg, fmt.Sprintf("all %d online node(s) run %s", st.Online, st.TargetVersion))
	case len(d.HealthFailures) > d.MaxFailures:
		st.Phase = v1alpha1.PhaseFailed
		msg = append(msg, HealthFailureMessage(st.Name, d.HealthFailures)+"; the rollout of "+st.Name+" is halted")
	case len(d.ArtifactFailures) > 0:
		st.Phase = v1alpha1.PhaseFailed
		msg = append(msg, ArtifactFailureMessage(st.Name, d.Artifact, d.ArtifactFailures))
	case in.Paused:
		st.Phase = v1alpha1.PhasePaused
		msg = append(msg, fmt.Sprintf("paused with %d/%d node(s) on %s", st.Updated, st.Total, st.TargetVersion))
	case len(in.WaitingFor) > 0:
		st.Phase = v1alpha1.PhasePending
		msg = append(msg, fmt.Sprintf("waiting for %s to complete", strings.Join(in.WaitingFor, ", ")))
	case in.BlockedBy != "":
		st.Phase = v1alpha1.PhasePending
		msg = append(msg, in.BlockedBy)
	default:
		st.Phase = v1alpha1.PhaseProgressing
		msg = append(msg, fmt.Sprintf("%d/%d node(s) on %s, %d staged, %d upgrading",
			st.Updated, st.Total, st.TargetVersion, st.Staged, st.Upgrading))
		if len(d.HealthFailures) > 0 {
			msg = append(msg, fmt.Sprintf("%s, rolled back and keeps its version: %d of maxFailures %d",
				HealthFailureMessage(st.Name, d.HealthFailures), len(d.HealthFailures), d.MaxFailures))
		}
		if st.Total > 0 && st.MinAvailable >= st.Total {
			msg = append(msg, fmt.Sprintf("minAvailable %d equals the node count, so no node can stop for an upgrade", st.MinAvailable))
		} else if st.Online > 0 && st.Online <= st.MinAvailable && st.Upgrading == 0 {
			msg = append(msg, fmt.Sprintf("only %d node(s) online and minAvailable is %d: waiting for nodes to come back", st.Online, st.MinAvailable))
		}
		if d.GateWait != "" {
			msg = append(msg, "waiting: "+d.GateWait)
		}
		if len(d.NotStaged) > 0 && st.Upgrading == 0 {
			msg = append(msg, fmt.Sprintf("distribution gate: %d node(s) must have %s staged before any node stops; not staged yet: %s",
				st.StagedRequired, st.TargetVersion, strings.Join(d.NotStaged, ", ")))
		}
	}
	if st.Unreachable > 0 {
		msg = append(msg, fmt.Sprintf("%d node(s) unreachable: %s", st.Unreachable, strings.Join(st.UnreachableNodes, ", ")))
	}
	if len(d.Unselected) > 0 {
		msg = append(msg, fmt.Sprintf("registered on node(s) the nodeSelector does not select, not counted online: %s",
			strings.Join(firstN(d.Unselected, MaxListedNodes), ", ")))
	}
	if m := AgentFailureMessage(st.Name, d.AgentFailures); m != "" {
		msg = append(msg, m)
	}
	if m := SignatureFailureMessage(st.Name, d.SignatureFailures); m != "" {
		msg = append(msg, m)
	}
	msg = append(msg, d.Malformed...)
	st.Message = strings.Join(msg, "; ")
}

// AgentFailureMessage says on which nodes the agent's step for a service panicked and why.
func AgentFailureMessage(svc string, failures []zklayout.Failure) string {
	if len(failures) == 0 {
		return ""
	}
	return fmt.Sprintf("the agent on %s hit an internal error handling %s (%s); it backs off and retries, report it as a bug",
		nodeList(failures), svc, failures[0].Reason)
}

// SignatureFailureMessage says which nodes refused a service's znodes for their signature.
func SignatureFailureMessage(svc string, failures []zklayout.Failure) string {
	if len(failures) == 0 {
		return ""
	}
	return fmt.Sprintf("the agent on %s refused what it read for %s: %s; it acts on none of it. Something other than this operator "+
		"wrote to ZooKeeper, or the agents do not trust the operator's signing key (docs/security.md)",
		nodeList(failures), svc, failures[0].Reason)
}

// ArtifactFailureMessage says which artifact (URL and sha256) failed on which nodes and why.
func ArtifactFailureMessage(svc string, a v1alpha1.ArtifactSpec, failures []zklayout.Failure) string {
	if len(failures) == 0 {
		return ""
	}
	f := failures[0]
	advice := "the node retries; fix the node (disk, network) or the origin"
	switch {
	case strings.Contains(f.Reason, "sha256"):
		advice = fmt.Sprintf("fix the artifact of service %s and give it a new version", svc)
	case strings.Contains(f.Reason, "larger than the seeder's directory budget"): // seeder.ErrTooLarge
		advice = "raise the operator's --seeder-max-bytes (and the volume behind it), or make the artifact smaller under a new version"
	case strings.Contains(f.Reason, "origin refused"): // seeder.ErrOriginRefused: for good
		advice = fmt.Sprintf("the operator does not read this origin (--seeder-file-roots, --seeder-allow-origin-cidrs): "+
			"point the artifact of service %s at an allowed one and give it a new version", svc)
	}
	return fmt.Sprintf("artifact %s (sha256 %s) of %s %s failed on %s: %s; %s",
		a.URL, a.SHA256, svc, f.Version, nodeList(failures), f.Reason, advice)
}

// HealthFailureMessage says which nodes failed the health check of a service's target.
func HealthFailureMessage(svc string, failures []zklayout.Failure) string {
	if len(failures) == 0 {
		return ""
	}
	f := failures[0]
	return fmt.Sprintf("%s %s failed its health check on %s: %s", svc, f.Version, nodeList(failures), f.Reason)
}

// firstN is names, with "and K more" in place of those past n.
func firstN(names []string, n int) []string {
	if len(names) <= n {
		return names
	}
	return append(append([]string(nil), names[:n]...), fmt.Sprintf("and %d more", len(names)-n))
}

func nodeList(fs []zklayout.Failure) string {
	names := make([]string, 0, len(fs))
	for i, f := range fs {
		if i == MaxListedNodes {
			names = append(names, fmt.Sprintf("and %d more", len(fs)-i))
			break
		}
		names = append(names, f.Node)
	}
	if len(fs) == 1 {
		return "node " + names[0]
	}
	return "nodes " + strings.Join(names, ", ")
}
