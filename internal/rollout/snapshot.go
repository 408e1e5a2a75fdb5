package rollout

import (
	"fmt"
	"maps"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Stat is what a read saw of one znode: whether it existed, its data version and its
// children's version. A watch armed after the read compares what it reads with this: a
// difference means the snapshot is stale, and the caller reads again instead of waiting.
type Stat struct {
	Exists   bool
	Version  int32
	CVersion int32
}

// Registration is one child of current/<svc> as read.
type Registration struct {
	// Node is the child's name.
	Node    string
	Version string
	Labels  map[string]string
	// Address and Since are the registration's, for the operator's mirror (the node map).
	Address string
	Since   time.Time
	// Owner is the ephemeral owner's session (0: persistent, no agent made it).
	Owner int64
	// Bad says why the child never counts whatever the plan: an invalid node name, a payload
	// that does not decode or names another node, gone before it could be read. "" when it
	// is well-formed.
	Bad string
}

// QueueEntry is one well-named child of staging/<svc> (<node>-<counter>), in queue order.
type QueueEntry struct {
	Child string
	Node  string
	Seq   int64
	// Loaded says the child's data was read: a reader reads only the entries a decision of
	// its node looks at (its own and those ahead of them), unless asked for all.
	Loaded bool
	// Gone: listed, but deleted before its data could be read.
	Gone bool
	// Owner is the ephemeral owner's session (0: persistent: made by hand, no agent stands
	// behind it). Version is the znode's data version.
	Owner   int64
	Version int32
	Staged  zklayout.Staged
	// Bad is set when the payload does not decode (it may be a newer agent's).
	Bad error
}

// DeployView is one well-named child of deploy/ (<svc>-<counter>), in queue order.
type DeployView struct {
	Child   string
	Service string
	Seq     int64
	// Loaded says the entry was read: the head and the entries of the snapshot's service.
	Loaded  bool
	Gone    bool
	Version int32
	Entry   zklayout.DeployEntry
	// Bad is set when the entry does not decode or does not verify.
	Bad error
}

// Need names the parts of a service's state a read may leave out, so that each step reads
// what its decision looks at (Step.Used) and not the whole state: a snapshot without a part
// it needs makes Next ask for it (StepRead).
type Need uint8

const (
	// NeedCurrent: every registration (current/<svc>), to count online nodes. Without it a
	// node's read holds its own registration only.
	NeedCurrent Need = 1 << iota
	// NeedQueue: every staging child's data. Without it only the reading node's own children
	// and those ahead of them are read.
	NeedQueue
	// NeedDeploy: the deploy queue, its head and the service's own entries (turn, catch-up,
	// completion).
	NeedDeploy
	// NeedTail: the staging queue's last child an agent made (walking back over persistent
	// ones), which an up-to-date node watches for completion.
	NeedTail
	// NeedDesignated: the service's designated completer (see Snapshot.Designated), found by
	// listing current/<svc> and reading its registrations in name order up to the first that
	// counts, instead of reading them all (NeedCurrent, which reads them all, implies it).
	NeedDesignated
	// NeedSample: a sample of the registrations, at most MaxSample of them chosen at random
	// (all when there are no more), enough to find the most popular version a node starts
	// (NeedCurrent implies it).
	NeedSample
	// NeedBatch: the staging children ahead of the reading node's own and up to MaxAdmit-1
	// behind it: the nodes in flight a first waiter counts and those it may admit with it,
	// without reading a long queue whole (NeedQueue implies it).
	NeedBatch
	// NeedAll is everything (what the operator reads; NeedQueue holds NeedBatch).
	NeedAll = NeedCurrent | NeedQueue | NeedDeploy | NeedTail
)

// has reports whether the snapshot holds the parts n names (NeedQueue holds NeedBatch's).
func (s *Snapshot) has(n Need) bool {
	have := s.Have
	if have&NeedQueue != 0 {
		have |= NeedBatch
	}
	return have&n == n
}

// MaxDesignateReads bounds the registrations a read looks at to find the designated completer;
// none counting among them leaves the completion check to every up-to-date node, as before.
const MaxDesignateReads = 8

// MaxSample bounds the registrations a node reads to pick the version it starts: with more
// registered peers the most popular version is that of a random sample of this many (exact up
// to this fleet size; beyond, a clear majority is found with high probability, and in a near
// tie either version is one the fleet runs).
const MaxSample = 64

// Refusal is a znode refused for its signature: nothing in it is acted on.
type Refusal struct {
	Znode string
	// Version is what the znode is about, as far as known ("" when not).
	Version string
	Err     error
}

// Snapshot is what one read of ZooKeeper saw of one service. The reader reads, in this order,
// the plan and staging queue, the deploy queue, the registrations and the failures: a node
// that fails records its failure before it leaves the staging queue, so a snapshot that no
// longer sees it queued sees its failure; and a decider leaves current/ in the transaction
// that marks it upgrading, so a snapshot that sees the mark counts the departure.
type Snapshot struct {
	Service string
	// Layout names the znodes (the watches a step names are paths).
	Layout zklayout.Layout
	// Plan is the decoded plan of staging/<svc>; nil when there is none, or it is malformed
	// or not validly signed (PlanBad says why). PlanStat is staging/<svc>'s stat: the plan is
	// its data, the staging queue its children.
	Plan     *zklayout.Plan
	PlanBad  error
	PlanStat Stat
	Queue    []QueueEntry
	// BadStaging are staging children that are not <node>-<counter>: outside the queue's
	// order, they block nobody (the operator removes them).
	BadStaging []string
	Deploy     []DeployView
	DeployStat Stat
	// Current are the registrations (with NeedCurrent), in name order; CurrentStat is
	// current/<svc>'s stat then.
	Current     []Registration
	CurrentStat Stat
	// Designated is the first registration in name order that counts (Online) and was made by
	// an agent (ephemeral): the node that checks whether a rollout with an empty staging queue
	// is complete, so that the others need not read every registration (NeedDesignated; nil:
	// none found).
	Designated *Registration
	// Sample is a sample of the registrations (NeedSample): every one up to MaxSample.
	Sample []Registration
	// Own is the reading node's registration (nil: none); OwnRead says it was read.
	Own     *Registration
	OwnRead bool
	// Have says which parts were read.
	Have Need
	// Failures are the well-formed failure records, each under its own node's name.
	// BadFailures says why the others are ignored. FailuresStat.Version is bumped with every
	// record written: a decision checks it.
	Failures     []zklayout.Failure
	BadFailures  []string
	FailuresStat Stat
	// Refused lists what was refused for its signature.
	Refused []Refusal
}

// Selector parses the plan's node selector (everything when empty).
func Selector(plan *zklayout.Plan) (labels.Selector, error) {
	if plan == nil || plan.Selector == "" {
		return labels.Everything(), nil
	}
	return labels.Parse(plan.Selector)
}

// Online maps each node that counts as online for the service to its version: a
// registration counts only if it is well-formed and its labels match the plan's selector (no
// plan: every well-formed one). A stray, malformed or foreign znode never stands in for a
// running node, so the count is conservative. notCounted says why the others do not count.
// An unparsable selector counts nobody.
func Online(current []Registration, plan *zklayout.Plan) (online, notCounted map[string]string) {
	online, notCounted = map[string]string{}, map[string]string{}
	selects := selection(plan)
	for _, r := range current {
		why := r.Bad
		if why == "" {
			why = selects(r.Labels)
		}
		if why != "" {
			notCounted[r.Node] = why
			continue
		}
		online[r.Node] = r.Version
	}
	return online, notCounted
}

// Selected keeps the registrations a plan with selector selects, as Online counts them.
func Selected(current []zklayout.Current, selector string) []zklayout.Current {
	selects := selection(&zklayout.Plan{Selector: selector})
	var out []zklayout.Current
	for _, c := range current {
		if selects(c.Labels) == "" {
			out = append(out, c)
		}
	}
	return out
}

// selection returns why plan's selector does not select a node with these labels ("" when it
// does).
func selection(plan *zklayout.Plan) func(lbls map[string]string) string {
	sel, err := Selector(plan)
	if err != nil {
		return func(map[string]string) string {
			return fmt.Sprintf("the plan's selector %q does not parse", plan.Selector)
		}
	}
	return func(lbls map[string]string) string {
		if sel.Matches(labels.Set(lbls)) {
			return ""
		}
		return fmt.Sprintf("node not selected by the plan (selector %q, labels %v)", plan.Selector, lbls)
	}
}

// Target is the version a node should run under plan, given the failure records: the plan's
// version, or with the Rollback policy after a health failure of it, the previous one. halted
// means the rollout stopped on such a failure (the Pause policy).
func Target(plan *zklayout.Plan, failures []zklayout.Failure) (target string, halted bool) {
	if len(Failed(plan, failures)) <= plan.MaxFailures {
		return plan.Version, false
	}
	if plan.FailurePolicy == zklayout.FailurePolicyRollback && plan.PreviousVersion != "" {
		return plan.PreviousVersion, false
	}
	return plan.Version, true
}

// Failed returns the nodes whose upgrade to the plan's version failed its health check: up to
// plan.MaxFailures of them are tolerated (each rolled itself back and keeps its version; the
// service completes without them), one more halts the rollout.
func Failed(plan *zklayout.Plan, failures []zklayout.Failure) map[string]bool {
	out := map[string]bool{}
	for _, f := range failures {
		if f.Kind == zklayout.FailureHealthCheck && f.Version == plan.Version {
			out[f.Node] = true
		}
	}
	return out
}

// registrationOK reports whether node's registration r is what a node running version in
// session with these labels must have.
func registrationOK(r Registration, version string, session int64, lbls map[string]string) bool {
	return r.Bad == "" && r.Owner == session && r.Version == version && maps.Equal(r.Labels, lbls)
}
