// Package zklayout is the one definition of rollkeeper's ZooKeeper tree: every znode path and
// every payload type. The operator and the node agent both import it; nothing else builds
// znode paths or marshals payloads.
//
//	<root>/current/<svc>/<node>          ephemeral   Current      who is online, on which version
//	<root>/staging/<svc>                 persistent  Plan         the service's target (operator)
//	<root>/staging/<svc>/<node>-<seq>    eph. seq.   Staged       node has the target ready; queue order
//	<root>/deploy/<svc>-<seq>            pers. seq.  DeployEntry  service deploy order (head upgrades)
//	<root>/releases/<svc>/<version>      persistent  Release      how to fetch and run a version
//	<root>/failures/<svc>/<node>         persistent  Failure      a node's failed upgrade or fetch
//	<root>/torrents/<svc>/<version>      persistent  Torrent      a version's BitTorrent metainfo summary
//	<root>/torrents/<svc>/<version>/<i>  persistent  raw bytes    the bencoded metainfo, in chunks
//	<root>/peers/<infohash>/<node>       ephemeral   Peer         a node serving or fetching a torrent
//	<root>/progress/<svc>/<node>         ephemeral   Progress     a node's download progress
//	<root>/rollcall/<svc>                persistent  (any)        a roll call: its data version is the round
//	<root>/rollcall/<svc>/<round>_<node> ephemeral   (empty)      node's service answered that round, alive
package zklayout

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// DefaultRoot is the root znode when none is configured.
const DefaultRoot = "/rollkeeper"

// Top-level children of the root.
const (
	currentDir  = "current"
	stagingDir  = "staging"
	deployDir   = "deploy"
	releasesDir = "releases"
	failuresDir = "failures"
	torrentsDir = "torrents"
	peersDir    = "peers"
	progressDir = "progress"
	rollCallDir = "rollcall"
)

// MetaChunkSize bounds each metainfo chunk well below ZooKeeper's default 1 MiB znode limit.
const MetaChunkSize = 512 << 10

// seqDigits is the width of the counter ZooKeeper appends to sequential nodes.
const seqDigits = 10

// Layout builds znode paths under a root. Its builders join names without checking them:
// every name they are given must have passed ValidService, ValidNode or ValidVersion (Decode
// checks every payload's), since path.Join would resolve a ".." in one.
type Layout struct {
	root string
}

// New checks root (absolute, no trailing slash unless "/", no empty or dot elements).
func New(root string) (Layout, error) {
	if root == "" {
		root = DefaultRoot
	}
	if !strings.HasPrefix(root, "/") || path.Clean(root) != root || root == "/" {
		return Layout{}, fmt.Errorf("zookeeper root %q: must be an absolute, clean path below /", root)
	}
	return Layout{root: root}, nil
}

// MustNew is New for constants known to be valid (tests, defaults).
func MustNew(root string) Layout {
	l, err := New(root)
	if err != nil {
		panic(err)
	}
	return l
}

// Root is the root znode.
func (l Layout) Root() string { return l.root }

// Bases are the persistent directories every actor may assume exist (EnsurePath them).
func (l Layout) Bases() []string {
	return []string{l.Current(), l.Staging(), l.Deploy(), l.Releases(), l.Failures(),
		l.Torrents(), l.Peers(), l.Progress(), l.RollCalls()}
}

// Current is the parent of every service's online set.
func (l Layout) Current() string { return path.Join(l.root, currentDir) }

// CurrentService holds one ephemeral child per online node of svc.
func (l Layout) CurrentService(svc string) string { return path.Join(l.Current(), svc) }

// CurrentNode is node's registration for svc.
func (l Layout) CurrentNode(svc, node string) string { return path.Join(l.CurrentService(svc), node) }

// Staging is the parent of every service's plan.
func (l Layout) Staging() string { return path.Join(l.root, stagingDir) }

// StagingService holds the Plan of svc; its children are the staging queue.
func (l Layout) StagingService(svc string) string { return path.Join(l.Staging(), svc) }

// StagingPrefix is the path to create (ephemeral sequential) when node joins svc's queue.
func (l Layout) StagingPrefix(svc, node string) string {
	return path.Join(l.StagingService(svc), node) + "-"
}

// StagingChild is the full path of a staging queue child.
func (l Layout) StagingChild(svc, child string) string {
	return path.Join(l.StagingService(svc), child)
}

// Deploy is the deploy order queue.
func (l Layout) Deploy() string { return path.Join(l.root, deployDir) }

// DeployPrefix is the path to create (persistent sequential) to enqueue svc.
func (l Layout) DeployPrefix(svc string) string { return path.Join(l.Deploy(), svc) + "-" }

// DeployEntry is the full path of a deploy queue child.
func (l Layout) DeployEntry(child string) string { return path.Join(l.Deploy(), child) }

// Releases is the parent of every service's known versions.
func (l Layout) Releases() string { return path.Join(l.root, releasesDir) }

// ReleaseService holds one child per known version of svc.
func (l Layout) ReleaseService(svc string) string { return path.Join(l.Releases(), svc) }

// Release describes how to fetch and run svc at version.
func (l Layout) Release(svc, version string) string {
	return path.Join(l.ReleaseService(svc), version)
}

// Failures is the parent of every service's recorded failures.
func (l Layout) Failures() string { return path.Join(l.root, failuresDir) }

// FailureService holds one child per node with a recorded failure for svc.
func (l Layout) FailureService(svc string) string { return path.Join(l.Failures(), svc) }

// Failure is node's recorded failure for svc.
func (l Layout) Failure(svc, node string) string { return path.Join(l.FailureService(svc), node) }

// Torrents is the parent of every service's published torrents.
func (l Layout) Torrents() string { return path.Join(l.root, torrentsDir) }

// TorrentService holds one child per published version of svc.
func (l Layout) TorrentService(svc string) string { return path.Join(l.Torrents(), svc) }

// Torrent describes the torrent of svc at version; its children hold the metainfo.
func (l Layout) Torrent(svc, version string) string {
	return path.Join(l.TorrentService(svc), version)
}

// TorrentChunk is the i-th metainfo chunk of svc at version.
func (l Layout) TorrentChunk(svc, version string, i int) string {
	return path.Join(l.Torrent(svc, version), fmt.Sprintf("%04d", i))
}

// Peers is the parent of every torrent's peer set (ZooKeeper is the tracker).
func (l Layout) Peers() string { return path.Join(l.root, peersDir) }

// PeerSet holds one ephemeral child per node serving or fetching infoHash.
func (l Layout) PeerSet(infoHash string) string { return path.Join(l.Peers(), infoHash) }

// Peer is node's entry in infoHash's peer set.
func (l Layout) Peer(infoHash, node string) string { return path.Join(l.PeerSet(infoHash), node) }

// Progress is the parent of every service's download progress.
func (l Layout) Progress() string { return path.Join(l.root, progressDir) }

// ProgressService holds one ephemeral child per node downloading svc.
func (l Layout) ProgressService(svc string) string { return path.Join(l.Progress(), svc) }

// ProgressNode is node's download progress for svc.
func (l Layout) ProgressNode(svc, node string) string {
	return path.Join(l.ProgressService(svc), node)
}

// RollCalls is the parent of every service's roll call.
func (l Layout) RollCalls() string { return path.Join(l.root, rollCallDir) }

// RollCall is svc's roll call: a node about to stop bumps its data version (the round), and
// every agent whose service runs answers with a RollCallAnswer child (see docs/design.md).
func (l Layout) RollCall(svc string) string { return path.Join(l.RollCalls(), svc) }

// RollCallAnswer is node's answer to round of svc's roll call.
func (l Layout) RollCallAnswer(svc string, round int32, node string) string {
	return path.Join(l.RollCall(svc), RollCallAnswerName(round, node))
}

// RollCallAnswerName is the child name of node's answer to round: <round, 10 digits>_<node>.
// '_' cannot occur in a node name (a DNS-1123 subdomain), so the split is unambiguous.
func RollCallAnswerName(round int32, node string) string {
	return fmt.Sprintf("%0*d_%s", seqDigits, round, node)
}

// ParseRollCallAnswer splits a roll call answer's child name. It fails on anything an agent
// did not make: a round that is not 10 digits, or an invalid node name.
func ParseRollCallAnswer(child string) (round int32, node string, err error) {
	if len(child) < seqDigits+2 || child[seqDigits] != '_' {
		return 0, "", fmt.Errorf("znode %q is not a roll call answer <round>_<node>", clip(child))
	}
	digits := child[:seqDigits]
	if strings.Trim(digits, "0123456789") != "" {
		return 0, "", fmt.Errorf("znode %q has no numeric round", clip(child))
	}
	r, err := strconv.ParseInt(digits, 10, 32)
	if err != nil {
		return 0, "", fmt.Errorf("znode %q: round out of range", clip(child))
	}
	node = child[seqDigits+1:]
	if err := ValidNode(node); err != nil {
		return 0, "", fmt.Errorf("znode %q: %w", clip(child), err)
	}
	return int32(r), node, nil
}

// SeqName is a parsed sequential znode name: <Name>-<Seq>.
type SeqName struct {
	Child string // the full child name
	Name  string // the prefix without the trailing '-'
	Seq   int64
}

// ParseSeq splits a sequential child name. It fails on names ZooKeeper did not make.
func ParseSeq(child string) (SeqName, error) {
	i := len(child) - seqDigits
	if i < 2 || child[i-1] != '-' {
		return SeqName{}, fmt.Errorf("znode %q is not a sequential <name>-<counter> node", child)
	}
	digits := child[i:]
	if strings.Trim(digits, "0123456789") != "" {
		// ParseInt would take a sign; ZooKeeper writes digits only.
		return SeqName{}, fmt.Errorf("znode %q has no numeric counter", child)
	}
	seq, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || seq < 0 {
		return SeqName{}, fmt.Errorf("znode %q has no numeric counter", child)
	}
	return SeqName{Child: child, Name: child[:i-1], Seq: seq}, nil
}

// SortSeq parses and orders sequential children by counter (queue order). Names that do not
// parse are returned separately so callers can report them instead of acting on them.
func SortSeq(children []string) (ordered []SeqName, bad []string) {
	ordered = make([]SeqName, 0, len(children))
	for _, c := range children {
		s, err := ParseSeq(c)
		if err != nil {
			bad = append(bad, c)
			continue
		}
		ordered = append(ordered, s)
	}
	slices.SortFunc(ordered, func(a, b SeqName) int { return cmp.Compare(a.Seq, b.Seq) })
	return ordered, bad
}
