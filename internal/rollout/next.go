package rollout

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Local is what a node knows of itself, outside ZooKeeper.
type Local struct {
	Node   string
	Labels map[string]string
	// Session is the node's ZooKeeper session: its registration and staging child must be
	// this session's own (ephemeral owner).
	Session int64
	// Running says the service's process runs, Version which version.
	Running bool
	Version string
	// Checked is the version whose process this agent saw pass its health check (started or
	// adopted). A process it did not check is not registered.
	Checked string
	// Current is the version installed as current ("" none): what a node with no plan and no
	// online peer starts.
	Current string
	// Installed reports whether a version is installed (fetched and verified) here.
	Installed func(version string) bool
	// Now is the node's clock, for maintenance windows.
	Now time.Time
}

// StepKind is what a node does next.
type StepKind int

const (
	// StepWait: nothing to do until one of Step.Watch changes (Reason says why).
	StepWait StepKind = iota
	// StepAgain: something vanished under the read; read again at once.
	StepAgain
	// StepRead: the decision needs parts of the state the read left out (Step.Need): read
	// again with them.
	StepRead
	// StepEnsurePaths: current/<svc> or failures/<svc> is missing; make them (child watches
	// need their parent, a decision checks failures/<svc>'s version).
	StepEnsurePaths
	// StepStart: the service is down; start Step.Version (the most popular among online peers).
	StepStart
	// StepAdopt: a process this agent did not start runs Step.Version: health-check it before
	// it counts (Step.PlanVersion: the plan's version, whose failure halts the rollout).
	StepAdopt
	// StepRegister: register the node online on Step.Version (Step.Replace: in place of the
	// registration under its name, which is not this session's or says something else).
	StepRegister
	// StepLeave: delete the node's staging children Step.Remove.
	StepLeave
	// StepClearArtifactFailure: the node's artifact failure record is stale (the version is
	// installed now); delete it.
	StepClearArtifactFailure
	// StepFetch: fetch and install Step.Version (abandoned when the plan changes: Step.Watch).
	StepFetch
	// StepStage: queue the node for Step.Version (a new staging child, ready), after deleting
	// its other children Step.Remove.
	StepStage
	// StepDecide: the node's turn: take it offline and mark it upgrading in one transaction
	// (checking Step.FailuresVersion and Step.ChildVersion), then upgrade to Step.Version.
	StepDecide
	// StepComplete: the service's rollout is complete: delete its deploy entries Step.Entries
	// so the next service's may begin.
	StepComplete
	// StepUpgrade: another node's decision admitted this one (its staging child Step.Child is
	// upgrading and its registration is gone): confirm the turn (failures/<svc> still at
	// Step.FailuresVersion, the child still at Step.ChildVersion) and upgrade to Step.Version.
	StepUpgrade
)

var stepNames = [...]string{"wait", "again", "read", "ensure-paths", "start", "adopt", "register", "leave",
	"clear-artifact-failure", "fetch", "stage", "decide", "complete", "upgrade"}

func (k StepKind) String() string {
	if k >= 0 && int(k) < len(stepNames) {
		return stepNames[k]
	}
	return fmt.Sprintf("step(%d)", int(k))
}

// WatchKind is what a watch looks at.
type WatchKind int

const (
	// WatchData: the znode's data and existence (a missing znode: its creation).
	WatchData WatchKind = iota
	// WatchChildren: the znode's list of children.
	WatchChildren
	// WatchExists: like WatchData, but the snapshot saw only that the znode exists (its data
	// was not read): only its existence is compared.
	WatchExists
)

// Watch names a znode whose change can change a step's answer, and what the snapshot saw of
// it: arming the watch reads the znode again, and a difference means the snapshot is stale.
// A change of the plan (its data, not the queue) matters to every wait, so every wait names it.
type Watch struct {
	Kind WatchKind
	Path string
	Seen Stat
}

// Changed reports whether now (read when arming the watch) differs from what the snapshot saw.
func (w Watch) Changed(now Stat) bool {
	if now.Exists != w.Seen.Exists {
		return true
	}
	switch w.Kind {
	case WatchChildren:
		return now.CVersion != w.Seen.CVersion
	case WatchExists:
		return false
	}
	return now.Version != w.Seen.Version
}

// Step is the one thing a node does next for a service.
type Step struct {
	Kind StepKind
	// Reason says why (a wait's reason is logged once); Fields are its structured details.
	Reason string
	Fields []any
	// Version is the version concerned (start, adopt, register, fetch, stage, decide).
	Version string
	// PlanVersion is the plan's version ("" without a plan).
	PlanVersion string
	// Replace: a registration under the node's name exists and is replaced.
	Replace bool
	// Child and ChildVersion are the node's staging child that decides and its data version;
	// FailuresVersion is failures/<svc>'s version the decision checks.
	Child           string
	ChildVersion    int32
	FailuresVersion int32
	// Online is how many nodes count as online (the decider included).
	Online int
	// Admit is a decision's batch: the decider's own child first, then the nodes queued right
	// behind it that may go with it (see Admissible). The roll call may shorten it.
	Admit []Admitted
	// Round is, for StepUpgrade, the roll call round of the decision that admitted the node.
	Round int32
	// Remove are staging children of the node to delete.
	Remove []string
	// Entries are the deploy entries a complete rollout deletes.
	Entries []DeployView
	// Watch are the znodes whose change can change this answer.
	Watch []Watch
	// Prewarm is the version staged here (to keep warm in the page cache), if any.
	Prewarm string
	// Skipped are persistent staging children ahead of the node, passed over (no agent made
	// them; the operator removes them).
	Skipped []string
	// Need is what a StepRead asks for; Used the optional parts the decision looked at.
	Need, Used Need
	// Registered says the node's registration stands as it must (this session's, on the
	// running version): it may answer roll calls.
	Registered bool
	// Gate names the gate beyond the quorum a wait is for (GateWindow...), and RetryAt when
	// to look again without a change in ZooKeeper (a maintenance window opening).
	Gate    string
	RetryAt time.Time
	// Floors are availability floors the roll call keeps besides the quorum (a domain's).
	Floors []Floor
	// Domain is the node's failure domain, written into its staging child (StepStage).
	Domain string
	// MinHealthy is how long an upgraded node stays healthy, still unregistered and marked
	// upgrading, before it counts as upgraded (StepDecide, StepUpgrade).
	MinHealthy time.Duration
	// Bake is how long a canary, registered on the version, keeps checking its health: the
	// canary phase's bake time, while the phase lasts (StepDecide, StepUpgrade); 0 otherwise.
	Bake time.Duration
}

func wait(reason string, watches []Watch, fields ...any) Step {
	return Step{Kind: StepWait, Reason: reason, Watch: watches, Fields: fields}
}

// Next is the protocol's decision for one node and one service: given what a read saw (s) and
// what the node knows of itself (l), the one thing to do next. Pure: the caller reads, arms the
// watches the step names, and executes it; each step does at most one thing and the next read
// sees its effect (level-triggered), so a crash or a lost session at any point is repaired by
// the next step. Step.Used says which optional parts of the state the decision looked at: the
// caller's next read includes them.
func Next(s *Snapshot, l Local) Step {
	d := &decision{s: s, l: l}
	st := d.next()
	st.Used = d.used
	return st
}

// decision is one evaluation of Next: it records the optional parts it uses.
type decision struct {
	s    *Snapshot
	l    Local
	used Need
}

// need records that the decision looks at part n; without it in the snapshot, the step is to
// read it (ok false).
func (d *decision) need(n Need, why string) (Step, bool) {
	d.used |= n
	if d.s.has(n) {
		return Step{}, true
	}
	return Step{Kind: StepRead, Need: n, Reason: why}, false
}

// online counts the online nodes (needs every registration).
func (d *decision) online(plan *zklayout.Plan, why string) (map[string]string, Step, bool) {
	if st, ok := d.need(NeedCurrent, why); !ok {
		return nil, st, false
	}
	online, _ := Online(d.s.Current, plan)
	return online, Step{}, true
}

func (d *decision) next() Step {
	s, l := d.s, d.l
	lay, svc := s.Layout, s.Service
	planWatch := Watch{Kind: WatchData, Path: lay.StagingService(svc), Seen: s.PlanStat}

	if !s.FailuresStat.Exists || (s.Have&NeedCurrent != 0 && !s.CurrentStat.Exists) {
		return Step{Kind: StepEnsurePaths, Reason: "current/ or failures/ of the service is missing"}
	}
	plan := s.Plan
	if plan != nil {
		sel, err := labels.Parse(plan.Selector)
		if err != nil {
			return wait("plan has an unparsable selector; not acting on it", []Watch{planWatch}, "selector", plan.Selector, "err", err.Error())
		}
		if !sel.Matches(labels.Set(l.Labels)) {
			return wait("this node is not selected for the service", []Watch{planWatch}, "selector", plan.Selector)
		}
	}
	var target string
	var halted bool
	planVersion := ""
	if plan != nil {
		target, halted = Target(plan, s.Failures)
		planVersion = plan.Version
	}

	if !l.Running {
		online, st, ok := d.sample(plan)
		if !ok {
			return st
		}
		var peers []string
		for n, v := range online {
			if n != l.Node {
				peers = append(peers, v)
			}
		}
		sort.Strings(peers)
		var v string
		switch {
		case len(peers) > 0:
			pref := target
			if halted && l.Current != "" {
				// The target failed its health check: on a tie, start what was installed
				// here, not the version that just failed.
				pref = l.Current
			}
			v, _ = MostPopular(peers, pref)
		case l.Current != "":
			// Nobody to follow: what was installed here. Starting the target instead would
			// run it ahead of the deploy queue's order (its dependencies may not be done, or
			// it may be the version that failed); the rollout upgrades this node in turn.
			v = l.Current
		case target != "":
			// Nothing installed: the plan's version is the only one to start.
			v = target
		default:
			currentWatch := Watch{Kind: WatchChildren, Path: lay.CurrentService(svc), Seen: s.CurrentStat}
			return wait("nothing to start: no plan, no online peer, no installed version", []Watch{planWatch, currentWatch})
		}
		// The plan's watch abandons a fetch for the start when the plan changes.
		return Step{Kind: StepStart, Version: v, PlanVersion: planVersion, Fields: []any{"peers", len(peers)}, Watch: []Watch{planWatch}}
	}
	if l.Checked != l.Version {
		return Step{Kind: StepAdopt, Version: l.Version, PlanVersion: planVersion, Watch: []Watch{planWatch}}
	}
	if st, ok := d.admitted(plan, target, halted); ok {
		return st
	}
	if st, ok := registrationStep(s, l); !ok {
		return st
	}
	st := d.registered(plan, target, halted)
	st.Registered = true
	return st
}

// admitted returns StepUpgrade when another node's decision admitted this one: its staging
// child (this session's, for the target) is upgrading and it is not registered, because that
// decision's transaction deleted its registration. Once the node registers again, an upgrading
// child of its own is stale (it is online, and counted): it then goes through the queue again.
// A plan that moved on or a recorded failure makes the node keep its version instead; it
// registers again, which only raises the count.
func (d *decision) admitted(plan *zklayout.Plan, target string, halted bool) (Step, bool) {
	s, l := d.s, d.l
	if plan == nil || halted || l.Version == target {
		return Step{}, false
	}
	var up *QueueEntry
	for i, q := range s.Queue {
		if q.Node == l.Node && q.Loaded && !q.Gone && q.Bad == nil && q.Owner == l.Session && q.Owner != 0 &&
			q.Staged.State == zklayout.StagedUpgrading && q.Staged.Version == target {
			up = &s.Queue[i]
			break
		}
	}
	if up == nil {
		return Step{}, false
	}
	own := s.Own
	if !s.OwnRead {
		for i := range s.Current {
			if s.Current[i].Node == l.Node {
				own = &s.Current[i]
			}
		}
	}
	if own != nil && own.Bad != "gone" {
		return Step{}, false
	}
	if l.Installed == nil || !l.Installed(target) {
		return Step{}, false
	}
	return Step{Kind: StepUpgrade, Version: target, PlanVersion: plan.Version, Child: up.Child, ChildVersion: up.Version,
		FailuresVersion: s.FailuresStat.Version, Prewarm: target, Reason: "admitted by " + up.Staged.Admitter(), MinHealthy: minHealthy(plan),
		Bake: bake(plan, target), Round: up.Staged.RollCall, Fields: []any{"round", up.Staged.RollCall}}, true
}

// registered is Next for a node whose service runs, checked and registered.
func (d *decision) registered(plan *zklayout.Plan, target string, halted bool) Step {
	s, l := d.s, d.l
	lay, svc := s.Layout, s.Service
	planWatch := Watch{Kind: WatchData, Path: lay.StagingService(svc), Seen: s.PlanStat}
	queueWatch := Watch{Kind: WatchChildren, Path: lay.StagingService(svc), Seen: s.PlanStat}
	currentWatch := Watch{Kind: WatchChildren, Path: lay.CurrentService(svc), Seen: s.CurrentStat}
	deployWatch := Watch{Kind: WatchChildren, Path: lay.Deploy(), Seen: s.DeployStat}
	failuresWatch := Watch{Kind: WatchChildren, Path: lay.FailureService(svc), Seen: s.FailuresStat}

	var mine []QueueEntry
	for _, q := range s.Queue {
		if q.Node == l.Node && !q.Gone {
			mine = append(mine, q)
		}
	}
	if plan == nil {
		if len(mine) > 0 {
			return Step{Kind: StepLeave, Reason: "no plan for the service", Remove: children(mine)}
		}
		return wait("no plan for the service", []Watch{planWatch}, "running", l.Version)
	}
	if ownFailure(s, l.Node, zklayout.FailureArtifact) && l.Installed != nil && l.Installed(target) {
		return Step{Kind: StepClearArtifactFailure, Version: target}
	}

	// A tolerated failure (within maxFailures): this node rolled back and keeps its version;
	// the others go on, and the service completes without it.
	tolerated := !halted && target == plan.Version && l.Version != target && Failed(plan, s.Failures)[l.Node]
	if l.Version == target || halted || tolerated {
		if len(mine) > 0 {
			return Step{Kind: StepLeave, Reason: "up to date", Remove: children(mine)}
		}
		watches := []Watch{planWatch}
		if halted || plan.FailurePolicy == zklayout.FailurePolicyRollback {
			// A halted node waits for the failures to be cleared; with the Rollback policy an
			// upgraded node must hear of a failure to roll back. Failures are rare, so this
			// watch wakes nobody during a healthy rollout.
			watches = append(watches, failuresWatch)
		}
		if halted {
			return wait("rollout halted by a failed health check", watches, "version", plan.Version, "running", l.Version)
		}
		if target == plan.Version {
			if st, ok := d.need(NeedDeploy, "completion: the service's deploy entries"); !ok {
				return st
			}
		}
		if target == plan.Version && len(ownEntries(s)) == 0 {
			// A deploy entry for the service may come (the operator queues it again for a node
			// that fell behind): this node may be the one to check completion then.
			watches = append(watches, deployWatch)
		}
		if target == plan.Version && len(ownEntries(s)) > 0 {
			st, ok := d.completion(plan)
			if ok {
				return st
			}
			if st.Kind != StepWait {
				return st
			}
			watches = append(watches, st.Watch...)
		}
		if tolerated {
			// It takes part in completion like an up-to-date node (it may be the designated
			// completer), and hears of a new plan or of failures beyond maxFailures.
			return wait("this node's upgrade failed its health check: it keeps its version (a failure within maxFailures)",
				append(watches, failuresWatch), "version", l.Version, "target", plan.Version, "maxFailures", plan.MaxFailures)
		}
		return wait("up to date", watches, "version", l.Version)
	}

	if l.Installed == nil || !l.Installed(target) {
		return Step{Kind: StepFetch, Version: target, PlanVersion: plan.Version, Watch: []Watch{planWatch}}
	}
	var keep *QueueEntry
	var others []string
	// A child staged under another topology (the plan gained one, or the node's label
	// changed) names the wrong domain: stage again.
	domain := DomainOf(plan, l.Labels)
	for i, q := range mine {
		if keep == nil && q.Loaded && q.Bad == nil && q.Owner == l.Session && q.Staged.Version == target && q.Staged.State == zklayout.StagedReady &&
			q.Staged.Domain == domain {
			keep = &mine[i]
			continue
		}
		others = append(others, q.Child)
	}
	if keep == nil {
		return Step{Kind: StepStage, Version: target, Remove: others, Prewarm: target, Domain: domain}
	}
	if len(others) > 0 {
		return Step{Kind: StepLeave, Reason: "staged twice", Remove: others, Prewarm: target}
	}
	if plan.Paused {
		st := wait("rollout paused", []Watch{planWatch}, "staged", target)
		st.Prewarm = target
		return st
	}
	// The service's turn first: every staged node hears of a deploy queue head it cannot act
	// on (one not validly signed is recorded by each), then its place in the staging queue.
	if st, ok := d.turn(target, planWatch, deployWatch); !ok {
		st.Prewarm = target
		return st
	}
	var skipped []string
	idx := slices.IndexFunc(s.Queue, func(q QueueEntry) bool { return q.Child == keep.Child })
walk:
	for j := idx - 1; j >= 0; j-- {
		q := s.Queue[j]
		pw := Watch{Kind: WatchData, Path: lay.StagingChild(svc, q.Child), Seen: Stat{Exists: true, Version: q.Version}}
		switch {
		case !q.Loaded:
			// The reader reads the entries ahead of the node's own: it read the queue
			// before the node's child was in it.
			return Step{Kind: StepRead, Need: NeedQueue, Reason: "predecessor not read"}
		case q.Gone:
			return Step{Kind: StepAgain, Reason: "predecessor left the staging queue"}
		case q.Owner == 0:
			// Agents stage only ephemeral children, so a persistent one was made by hand: no
			// agent stands behind it and none will ever decide through it.
			skipped = append(skipped, q.Child)
			continue
		case q.Bad != nil:
			// It may be a newer agent's (another schema), which could decide: never skip it.
			// Its owner's session removes it (a dead one expires); the watch wakes us then.
			return Step{Kind: StepWait, Reason: "predecessor in the staging queue is malformed; waiting for its owner's session to remove it",
				Watch: []Watch{planWatch, pw}, Prewarm: target, Skipped: skipped,
				Fields: []any{"znode", pw.Path, "owner", fmt.Sprintf("0x%x", q.Owner), "err", q.Bad.Error()}}
		case q.Staged.State == zklayout.StagedUpgrading:
			// Upgrading members form a prefix of the queue, so an upgrading predecessor means
			// every member ahead is upgrading: this node is the first waiter.
			break walk
		default:
			// Like ZooKeeper's lock recipe, a waiter watches only its predecessor, so one
			// queue change wakes one agent.
			return Step{Kind: StepWait, Reason: "queued behind " + q.Staged.Node, Watch: []Watch{planWatch, pw}, Prewarm: target,
				Skipped: skipped, Fields: []any{"predecessor", q.Child}}
		}
	}
	online, st, ok := d.online(plan, "the first waiter's gates count online nodes")
	if !ok {
		return st
	}
	if target == plan.Version {
		if ok, have, need := distributed(s, plan, online); !ok {
			return Step{Kind: StepWait, Reason: "distribution gate: not enough nodes have the version staged",
				Watch: []Watch{planWatch, queueWatch, currentWatch}, Prewarm: target, Skipped: skipped, Fields: []any{"staged", have, "required", need}}
		}
	}
	if w, at := Window(plan, l.Now); w != "" {
		// Checked before the quorum: outside a window nothing else matters.
		return Step{Kind: StepWait, Reason: w, Gate: GateWindow, RetryAt: at, Watch: []Watch{planWatch}, Prewarm: target, Skipped: skipped}
	}
	if !MayStop(len(online), plan.MinAvailable) {
		return Step{Kind: StepWait, Reason: "quorum does not allow another node down", Watch: []Watch{planWatch, currentWatch}, Prewarm: target,
			Skipped: skipped, Fields: []any{"online", len(online), "minAvailable", plan.MinAvailable}}
	}
	admit := []Admitted{{Node: l.Node, Child: keep.Child, ChildVersion: keep.Version}}
	room := len(online) - 1 - plan.MinAvailable
	if room > 0 || idx > 0 || plan.Topology != nil {
		// Nodes ahead may still be in flight, and the nodes queued right behind may go in the
		// same decision: read them (a plain read holds the nearest predecessor only), and
		// before the registrations, as the protocol reads. Read after them, a node back from
		// its restart since would look gone from the queue and not yet online: not in flight,
		// and the waiter would go alone (at 5,000 nodes, decisions alternated between a full
		// wave and one node). So a snapshot without them is read again, with them.
		if _, ok := d.need(NeedBatch, ""); !ok {
			return Step{Kind: StepAgain, Prewarm: target,
				Reason: "batch admission: read the nodes in flight ahead of the first waiter and those queued behind it before the registrations"}
		}
	}
	flights := inFlight(s, idx, online)
	g := Gates(GateInput{Plan: plan, Now: l.Now, Domain: domain, InFlight: flights, Queued: queued(s, idx, target),
		Online: domains(d.s.Current, plan, online), Target: target, OnTarget: onTarget(d.s.Current, online, target, plan)})
	if g.Wait != "" {
		if g.Requeue {
			return Step{Kind: StepLeave, Reason: g.Wait + ": requeueing behind its nodes", Gate: g.Gate, Remove: []string{keep.Child}, Prewarm: target}
		}
		return Step{Kind: StepWait, Reason: g.Wait, Gate: g.Gate, RetryAt: g.RetryAt, Watch: []Watch{planWatch, queueWatch, currentWatch},
			Prewarm: target, Skipped: skipped, Fields: []any{"inFlight", len(flights)}}
	}
	var floors []Floor
	if g.Floor != nil {
		floors = []Floor{*g.Floor}
	}
	admit[0].Domain = domain
	if flying := len(flights); room > 0 || flying > 0 {
		// The quorum allows more than this node down, or will once the nodes in flight are
		// back.
		ready := behind(s, idx, target, online, MaxAdmit-1)
		if plan.Topology != nil {
			// A batch stays in the first waiter's domain.
			for i, a := range ready {
				if a.Domain != domain {
					ready = ready[:i]
					break
				}
			}
		}
		if g.Others >= 0 {
			ready = ready[:min(g.Others, len(ready))]
		}
		admit = append(admit, ready[:min(room, len(ready))]...)
		allowed := room + 1 + flying
		if g.Allowed >= 0 {
			allowed = min(allowed, g.Allowed)
		}
		// Every decision costs every node a few requests (its roll call), so admitting nodes
		// one by one as they come back would make a rollout cost O(N) decisions and each node
		// O(N) requests. While nodes are in flight, wait until at least half of what the
		// quorum will then allow may go (or every waiter): a rollout then takes at most about
		// 2N/P decisions (P nodes allowed down), whatever the fleet's size. Admitting fewer is
		// always safe; this only spaces decisions out, and the first of the nodes in flight to
		// return or vanish wakes the waiter again.
		want := min((allowed+1)/2, MaxAdmit, 1+len(ready))
		if len(admit) < want {
			return Step{Kind: StepWait, Reason: "batch admission: waiting for nodes in flight to return",
				Watch: []Watch{planWatch, queueWatch, currentWatch}, Prewarm: target, Skipped: skipped,
				Fields: []any{"admit", len(admit), "want", want, "inFlight", flying}}
		}
	}
	return Step{Kind: StepDecide, Version: target, PlanVersion: plan.Version, Child: keep.Child, ChildVersion: keep.Version,
		FailuresVersion: s.FailuresStat.Version, Online: len(online), Prewarm: target, Skipped: skipped, Admit: admit, Floors: floors,
		MinHealthy: minHealthy(plan), Bake: bake(plan, target)}
}

func minHealthy(plan *zklayout.Plan) time.Duration {
	return time.Duration(plan.MinHealthySeconds) * time.Second
}

// bake is how long a node upgrading to target keeps checking it once registered: during a
// canary phase that promotes itself, every node going to the plan's version is a canary (the
// phase caps batches to the canaries), and the bake that promotes the service must be one of
// healthy canaries, not merely registered ones.
func bake(plan *zklayout.Plan, target string) time.Duration {
	if plan.Canary == 0 || plan.Promoted || plan.CanaryBakeSeconds == 0 || target != plan.Version {
		return 0
	}
	return time.Duration(plan.CanaryBakeSeconds) * time.Second
}

// inFlight counts the nodes admitted ahead of the first waiter (at idx) that are not back
// online: upgrading children form a prefix of the queue, a node that returns registers and
// leaves the queue in one transaction, and one that dies takes its ephemeral child with its
// session.
func inFlight(s *Snapshot, idx int, online map[string]string) []Flight {
	var out []Flight
	for _, q := range s.Queue[:idx] {
		if q.Loaded && !q.Gone && q.Bad == nil && q.Owner != 0 && q.Staged.State == zklayout.StagedUpgrading {
			if _, back := online[q.Node]; !back {
				out = append(out, Flight{Node: q.Node, Domain: q.Staged.Domain})
			}
		}
	}
	return out
}

// queued returns the ready nodes queued for target behind the first waiter (at idx), among the
// entries read: the domain order looks for earlier domains among them.
func queued(s *Snapshot, idx int, target string) []Flight {
	var out []Flight
	for _, q := range s.Queue[idx+1:] {
		if q.Loaded && !q.Gone && q.Bad == nil && q.Owner != 0 && q.Staged.State == zklayout.StagedReady && q.Staged.Version == target {
			out = append(out, Flight{Node: q.Node, Domain: q.Staged.Domain})
		}
	}
	return out
}

// onTarget maps each online node on target to when it registered it (nil without a canary
// phase: only the canary gate looks at it).
func onTarget(current []Registration, online map[string]string, target string, plan *zklayout.Plan) map[string]time.Time {
	if plan.Canary == 0 || plan.Promoted {
		return nil
	}
	out := map[string]time.Time{}
	for _, r := range current {
		if v, ok := online[r.Node]; ok && v == target {
			out[r.Node] = r.Since
		}
	}
	return out
}

// domains maps each online node to its failure domain (nil without a topology).
func domains(current []Registration, plan *zklayout.Plan, online map[string]string) map[string]string {
	if plan.Topology == nil {
		return nil
	}
	out := make(map[string]string, len(online))
	for _, r := range current {
		if _, ok := online[r.Node]; ok {
			out[r.Node] = DomainOf(plan, r.Labels)
		}
	}
	return out
}

// behind returns up to room nodes queued right behind the first waiter (at idx) that may be
// admitted with it: ready for target, staged by a live agent (ephemeral, well-formed) and
// online on another version. The batch stops at the first member that is not, so upgrading
// children keep forming a prefix of the queue; persistent strays are passed over as waiters
// pass over them.
func behind(s *Snapshot, idx int, target string, online map[string]string, room int) []Admitted {
	var out []Admitted
	seen := map[string]bool{s.Queue[idx].Node: true}
	for _, q := range s.Queue[idx+1:] {
		if len(out) == room {
			break
		}
		if q.Loaded && !q.Gone && q.Bad == nil && q.Owner == 0 {
			continue
		}
		v, on := online[q.Node]
		if !q.Loaded || q.Gone || q.Bad != nil || seen[q.Node] || q.Staged.State != zklayout.StagedReady ||
			q.Staged.Version != target || q.Staged.Node != q.Node || !on || v == target {
			break
		}
		seen[q.Node] = true
		out = append(out, Admitted{Node: q.Node, Child: q.Child, ChildVersion: q.Version, Domain: q.Staged.Domain})
	}
	return out
}

// completion decides for an up-to-date node whose service still has deploy entries: the step
// that completes the rollout (ok), or what else to read, or the watches to wait on (a wait).
func (d *decision) completion(plan *zklayout.Plan) (Step, bool) {
	s := d.s
	lay, svc := s.Layout, s.Service
	if len(s.Queue) > 0 {
		if st, ok := d.need(NeedTail, "completion check"); !ok {
			return st, false
		}
		last := -1
		for i, q := range s.Queue {
			if q.Loaded && !q.Gone && q.Owner != 0 {
				// Made by an agent, live (possibly unreadable: an upgrade under way?).
				last = i
			}
		}
		if last < 0 {
			// Every child is persistent (made by hand: it holds nothing back), or gone.
			for _, q := range s.Queue {
				if !q.Loaded {
					return Step{Kind: StepRead, Need: NeedTail | NeedQueue, Reason: "completion check"}, false
				}
			}
		}
		if last >= 0 {
			// Nodes are still queued: the rollout goes on elsewhere. The queue is first in,
			// first out, so its last child is normally the last to go: watching it (not the
			// whole queue or every registration) wakes an up-to-date node about once, and
			// what it sees then decides whether to watch the new last child.
			return wait("", []Watch{{Kind: WatchExists, Path: lay.StagingChild(svc, s.Queue[last].Child), Seen: Stat{Exists: true}}}), false
		}
	}
	// Nobody is queued: one node, the designated completer, reads every registration and
	// checks; the others watch its registration (it going away designates another), so the
	// last child's departure does not make every up-to-date node read every registration.
	if dn, st, ok := d.designated(plan); !ok {
		return st, false
	} else if dn != "" && dn != d.l.Node {
		return wait("", []Watch{{Kind: WatchExists, Path: lay.CurrentNode(svc, dn), Seen: Stat{Exists: true}}}), false
	}
	if st, ok := d.need(NeedCurrent|NeedDeploy, "completion check"); !ok {
		return st, false
	}
	// Nobody is queued here (see above): the same rule as the operator's (Done).
	if !Done(s, plan.Version, plan, NeedOnline(plan.MinAvailable, 1)) {
		// Nobody is queued, yet some online node is not on the target (it is still
		// fetching, say): its next registration may complete the rollout.
		return wait("", []Watch{{Kind: WatchChildren, Path: lay.CurrentService(svc), Seen: s.CurrentStat}}), false
	}
	var done []DeployView
	for _, e := range ownEntries(s) {
		if e.Loaded && e.Bad == nil && !e.Gone && e.Entry.Version == plan.Version {
			done = append(done, e)
		}
	}
	if len(done) == 0 {
		return wait("", nil), false
	}
	return Step{Kind: StepComplete, Version: plan.Version, Entries: done}, true
}

// sample returns the online nodes among a sample of the registrations (all of them when every
// registration was read): what a node that starts its service follows.
func (d *decision) sample(plan *zklayout.Plan) (map[string]string, Step, bool) {
	if d.s.Have&NeedCurrent != 0 {
		d.used |= NeedSample
		online, _ := Online(d.s.Current, plan)
		return online, Step{}, true
	}
	if st, ok := d.need(NeedSample, "start: the most popular version among online peers"); !ok {
		return nil, st, false
	}
	online, _ := Online(d.s.Sample, plan)
	return online, Step{}, true
}

// designated returns the designated completer's node name ("": none counts among those the
// read looked at; every up-to-date node then checks, as without a designated completer).
// With every registration read it is found among them; otherwise it asks for NeedDesignated.
func (d *decision) designated(plan *zklayout.Plan) (string, Step, bool) {
	s := d.s
	if s.Have&NeedCurrent != 0 {
		regs := slices.Clone(s.Current)
		slices.SortFunc(regs, func(a, b Registration) int { return strings.Compare(a.Node, b.Node) })
		for i, r := range regs {
			if i == MaxDesignateReads {
				break
			}
			if designates(r, plan) {
				return r.Node, Step{}, true
			}
		}
		return "", Step{}, true
	}
	if st, ok := d.need(NeedDesignated, "completion check: the designated completer"); !ok {
		return "", st, false
	}
	if s.Designated == nil {
		return "", Step{}, true
	}
	return s.Designated.Node, Step{}, true
}

// registrationStep checks the node's own registration: ok when it is this session's and says
// what the node runs; otherwise the step that registers it.
func registrationStep(s *Snapshot, l Local) (Step, bool) {
	own := s.Own
	if !s.OwnRead {
		for i := range s.Current {
			if s.Current[i].Node == l.Node {
				own = &s.Current[i]
			}
		}
	}
	if own == nil || own.Bad == "gone" {
		return Step{Kind: StepRegister, Version: l.Version, Reason: "not registered"}, false
	}
	why := ""
	switch r := *own; {
	case r.Bad != "":
		why = r.Bad
	case r.Owner != l.Session:
		why = fmt.Sprintf("left by another session (0x%x)", r.Owner)
	case r.Version != l.Version:
		why = fmt.Sprintf("says version %q", r.Version)
	case !registrationOK(r, l.Version, l.Session, l.Labels):
		why = "carries other labels"
	default:
		return Step{}, true
	}
	return Step{Kind: StepRegister, Version: l.Version, Replace: true, Reason: why}, false
}

// turn reports whether the service heads the deploy queue, or has a catch-up entry for target
// anywhere in it (the operator queued it again for nodes that fell behind after its rollout;
// see zklayout.DeployEntry.CatchUp). Otherwise it returns the step: a wait, or what to read.
func (d *decision) turn(target string, planWatch, deployWatch Watch) (Step, bool) {
	s := d.s
	if st, ok := d.need(NeedDeploy, "the deploy queue's head"); !ok {
		return st, false
	}
	if len(s.Deploy) == 0 {
		return wait("deploy queue is empty", []Watch{planWatch, deployWatch}), false
	}
	head := s.Deploy[0]
	switch {
	case head.Gone:
		return Step{Kind: StepAgain, Reason: "deploy queue head went away"}, false
	case head.Bad != nil:
		return wait("deploy queue head is malformed or not validly signed; not acting on it", []Watch{planWatch, deployWatch},
			"znode", head.Child, "err", head.Bad.Error()), false
	case head.Entry.Service == s.Service:
		return Step{}, true
	}
	for _, e := range s.Deploy[1:] {
		if e.Service == s.Service && e.Loaded && !e.Gone && e.Bad == nil && e.Entry.Service == s.Service &&
			e.Entry.Version == target && e.Entry.CatchUp {
			return Step{}, true
		}
	}
	return wait("another service heads the deploy queue", []Watch{planWatch, deployWatch}, "head", head.Entry.Service), false
}

// distributed applies the distribution gate: enough nodes must have the plan's version staged
// (or already run it) before any node stops for it; by default every online node.
func distributed(s *Snapshot, plan *zklayout.Plan, online map[string]string) (ok bool, have, need int) {
	ready := map[string]bool{}
	for _, q := range s.Queue {
		ready[q.Node] = true
	}
	failed := Failed(plan, s.Failures)
	for n, v := range online {
		// A node whose upgrade failed (a failure maxFailures tolerates) keeps its version and
		// never stages again: waiting for it would wait for good.
		if v == plan.Version || failed[n] {
			ready[n] = true
		}
	}
	if plan.MinStaged != nil {
		return len(ready) >= *plan.MinStaged, len(ready), *plan.MinStaged
	}
	for n := range online {
		if ready[n] {
			have++
		}
	}
	return have == len(online), have, len(online)
}

// CurrentOf gives Complete's inputs from registrations: those that count as online under plan
// (Online), and how many registrations held by a live session cannot be read (online, but
// nobody knows on which version). A persistent registration was made by hand, so no agent
// stands behind it, and a registration that is gone or not a node's name is nobody's: neither
// holds a rollout back.
func CurrentOf(regs []Registration, plan *zklayout.Plan) (current []zklayout.Current, unreadable int) {
	online, _ := Online(regs, plan)
	for _, r := range regs {
		switch v, ok := online[r.Node]; {
		case ok:
			current = append(current, zklayout.Current{Node: r.Node, Version: v, Labels: r.Labels})
		case r.Bad != "" && r.Bad != "gone" && r.Bad != badName && r.Owner != 0:
			unreadable++
		}
	}
	return current, unreadable
}

const badName = "not a valid node name"

func ownFailure(s *Snapshot, node, kind string) bool {
	for _, f := range s.Failures {
		if f.Node == node && f.Kind == kind {
			return true
		}
	}
	return false
}

func ownEntries(s *Snapshot) []DeployView {
	var out []DeployView
	for _, d := range s.Deploy {
		if d.Service == s.Service {
			out = append(out, d)
		}
	}
	return out
}

func children(qs []QueueEntry) []string {
	out := make([]string, len(qs))
	for i, q := range qs {
		out[i] = q.Child
	}
	return out
}
