package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
	"github.com/rollkeeper/rollkeeper/nodeagent/veto"
)

// step does the next thing this node's service needs, or arms watches and returns errWait.
// It is the protocol's loop in four parts: read a snapshot of the service (rollout.Reader),
// decide (rollout.Next, pure), arm the watches the decision names (a watch that finds its
// znode changed since the read means the snapshot is stale: look again at once), execute.
func (w *worker) step(root, ctx context.Context) error {
	// A tree others may change could hold anyone's plan and release: act on nothing in it (the
	// host service is left as it is) until the guard finds it locked again.
	if g := w.a.cfg.Guard; g != nil {
		if err := g.Err(); err != nil {
			w.waitOn = nil
			return w.waiting("not acting on plans: rollkeeper's ZooKeeper tree is not locked to rollkeeper's identity; the service is left as it is", "err", err.Error())
		}
	}
	w.at = w.l.StagingService(w.svc)
	snap, err := w.reader.Read(ctx, w.need)
	if err != nil {
		return err
	}
	if snap.Plan != nil {
		w.planVersion = snap.Plan.Version
	}
	w.at = w.l.CurrentNode(w.svc, w.a.cfg.Node)
	local := w.local()
	st := rollout.Next(snap, local)
	// A decision that needs more of the state than the read holds asks for it: read it into
	// the same snapshot (once per part) and decide again.
	for tries := 0; st.Kind == rollout.StepRead; tries++ {
		if tries == 3 {
			return fmt.Errorf("decision keeps asking for more of the state (%v): %s", st.Need, st.Reason)
		}
		if err := w.reader.ReadMore(ctx, snap, st.Need); err != nil {
			return err
		}
		st = rollout.Next(snap, local)
	}
	w.note(snap)
	// The next read holds what this decision looked at.
	w.need = st.Used
	w.log.V(2).Info("step", "kind", st.Kind.String(), "version", st.Version, "reason", st.Reason)
	changed, err := w.arm(ctx, st.Watch)
	if err != nil {
		return err
	}
	if changed {
		return nil
	}
	w.keepWarm(ctx, st)
	if st.Registered && !w.registered.Load() {
		w.setRegistered()
	}
	if st.Registered {
		w.a.cfg.Metrics.online(w.svc, local.Version)
	}
	return w.execute(root, ctx, snap, st)
}

// local is what the node knows of its service outside ZooKeeper.
func (w *worker) local() rollout.Local {
	cfg := w.a.cfg
	bs := cfg.Backend.Status(w.svc)
	return rollout.Local{Node: cfg.Node, Labels: cfg.Labels, Session: w.zk.Session().ID,
		Running: bs.Running, Version: bs.Version, Checked: w.checked, Current: cfg.Store.Current(w.svc),
		Installed: func(v string) bool { return cfg.Store.Has(w.svc, v) }, Now: time.Now()}
}

// note takes from a snapshot what is only logged or recorded: refusals (one Signature failure
// per step, see settleSignatures) and znodes that are ignored (each said once per reason).
func (w *worker) note(s *rollout.Snapshot) {
	for _, r := range s.Refused {
		w.noteRefused(r.Err, r.Version)
	}
	seen := map[string]bool{}
	say := func(key, msg string, kv ...any) {
		seen[key] = true
		if !w.said[key] {
			w.log.Error(zklayout.ErrMalformed, msg, kv...)
			w.said[key] = true
		}
	}
	if s.PlanBad != nil && !zksign.IsSignatureError(s.PlanBad) {
		// Treated as no plan: the node keeps (or brings) its service up as it is, and the
		// plan's watch wakes it when the plan is rewritten.
		say("plan:"+s.PlanBad.Error(), "plan is malformed; not acting on it", "err", s.PlanBad.Error())
	}
	for _, b := range s.BadStaging {
		// Outside the queue's order, so it blocks nobody; the operator removes it.
		say("staging:"+b, "ignoring staging child that is not <node>-<counter>", "znode", w.l.StagingChild(w.svc, b))
	}
	for _, b := range s.BadFailures {
		say("failure:"+b, "ignoring malformed failure record", "record", b)
	}
	// The start-up sample too: a start decision reads only the sample, and must say what in it
	// did not count.
	_, notCounted := rollout.Online(slices.Concat(s.Current, s.Sample), s.Plan)
	for n, why := range notCounted {
		if why == "gone" {
			continue
		}
		key := "current:" + n + ":" + why
		seen[key] = true
		if !w.said[key] {
			w.log.Info("registration does not count as an online node", "znode", w.l.CurrentNode(w.svc, n), "why", why)
			w.said[key] = true
		}
	}
	for k := range w.said {
		if !seen[k] && !strings.HasPrefix(k, "skipped:") {
			delete(w.said, k)
		}
	}
}

// noteRefused notes a znode refused for its signature for this step's Signature failure record
// (see settleSignatures); version is what the znode is about, as far as known.
func (w *worker) noteRefused(err error, version string) {
	if version == "" {
		version = w.a.cfg.Store.Current(w.svc)
	}
	if len(w.refused) == 0 {
		w.refusedVersion = version
	}
	if msg := err.Error(); !slices.Contains(w.refused, msg) {
		w.refused = append(w.refused, msg)
	}
}

// arm makes sure each watch is armed, and reports whether one found its znode changed since
// the snapshot read it. An armed watch still pending needs no new read: it fires on any change
// since it was armed, so nothing is missed. waitOn becomes these watches: a wait wakes on them.
func (w *worker) arm(ctx context.Context, watches []rollout.Watch) (changed bool, err error) {
	// Forget the watches that fired while nobody waited on them (a predecessor that left, say),
	// so the armed set holds only pending ones.
	for k, wt := range w.armed {
		select {
		case <-wt.C():
			wt.Fired()
			delete(w.armed, k)
		default:
		}
	}
	w.waitOn = w.waitOn[:0]
	for _, wt := range watches {
		key := watchKey(wt)
		w.waitOn = append(w.waitOn, key)
		if _, ok := w.armed[key]; ok {
			continue
		}
		var now rollout.Stat
		var zw zkclient.Watch
		switch wt.Kind {
		case rollout.WatchChildren:
			var st zkclient.Stat
			_, st, zw, err = w.zk.ChildrenW(ctx, wt.Path)
			if errors.Is(err, zkclient.ErrNoNode) {
				// No children to watch: watch for the znode to appear.
				var exists bool
				exists, st, zw, err = w.zk.ExistsW(ctx, wt.Path)
				if err == nil {
					now = rollout.Stat{Exists: exists, Version: st.Version, CVersion: st.CVersion}
				}
			} else if err == nil {
				now = rollout.Stat{Exists: true, Version: st.Version, CVersion: st.CVersion}
			}
		default:
			var exists bool
			var st zkclient.Stat
			// ExistsW watches creation, data changes and deletion alike, and reads no data.
			exists, st, zw, err = w.zk.ExistsW(ctx, wt.Path)
			if err == nil {
				now = rollout.Stat{Exists: exists, Version: st.Version, CVersion: st.CVersion}
			}
		}
		if err != nil {
			return false, err
		}
		w.armed[key] = zw
		if wt.Changed(now) {
			changed = true
		}
	}
	return changed, nil
}

func watchKey(wt rollout.Watch) string {
	if wt.Kind == rollout.WatchChildren {
		return "children:" + wt.Path
	}
	// WatchData and WatchExists arm the same ZooKeeper watch (ExistsW).
	return "data:" + wt.Path
}

// keepWarm keeps the staged version pre-warmed and pinned in the page cache, and lets go of a
// version the node no longer upgrades to.
func (w *worker) keepWarm(ctx context.Context, st rollout.Step) {
	switch {
	case st.Prewarm != "":
		w.prewarm(ctx, st.Prewarm)
	case w.warmVersion == "":
	case st.Kind == rollout.StepFetch || st.Kind == rollout.StepWait || st.Kind == rollout.StepLeave ||
		st.Kind == rollout.StepComplete || st.Kind == rollout.StepStart:
		w.unwarm()
	}
}

// execute carries out one step.
func (w *worker) execute(root, ctx context.Context, snap *rollout.Snapshot, st rollout.Step) error {
	cfg := w.a.cfg
	for _, c := range st.Skipped {
		if key := "skipped:" + c; !w.said[key] {
			w.log.Error(zklayout.ErrMalformed, "skipping a persistent staging child no agent made", "znode", w.l.StagingChild(w.svc, c))
			w.said[key] = true
		}
	}
	cfg.Metrics.gate(w.svc, st.Gate)
	switch st.Kind {
	case rollout.StepWait:
		if !st.RetryAt.IsZero() {
			// A maintenance window opens then; a change in ZooKeeper may wake the worker first.
			w.retryAt = st.RetryAt
		}
		if st.Gate != "" {
			return w.waiting(st.Reason, append([]any{"gate", st.Gate}, st.Fields...)...)
		}
		return w.waiting(st.Reason, st.Fields...)
	case rollout.StepAgain:
		w.log.V(1).Info("looking again", "why", st.Reason)
		return nil
	case rollout.StepEnsurePaths:
		// Child watches need their parent to exist; a missing parent would silently watch nothing.
		for _, p := range []string{w.l.CurrentService(w.svc), w.l.FailureService(w.svc)} {
			if err := w.zk.EnsurePath(ctx, p); err != nil {
				return fmt.Errorf("ensure %s: %w", p, err)
			}
		}
		return nil
	case rollout.StepStart:
		cfg.Metrics.down(w.svc)
		return w.start(root, ctx, st)
	case rollout.StepAdopt:
		return w.checkAdopted(root, ctx, st.Version, st.PlanVersion)
	case rollout.StepRegister:
		return w.register(ctx, st)
	case rollout.StepLeave:
		if st.Gate != "" {
			w.log.Info("leaving the staging queue to stage again", "why", st.Reason, "gate", st.Gate)
		}
		return w.leave(ctx, st.Remove)
	case rollout.StepClearArtifactFailure:
		w.clearFailure(ctx, zklayout.FailureArtifact)
		return nil
	case rollout.StepFetch:
		return w.fetchTarget(ctx, st.Version)
	case rollout.StepStage:
		return w.stage(ctx, st)
	case rollout.StepDecide:
		return w.decideAndUpgrade(root, ctx, snap, st)
	case rollout.StepUpgrade:
		return w.upgradeAdmitted(root, ctx, snap, st)
	case rollout.StepComplete:
		return w.complete(ctx, st)
	}
	return fmt.Errorf("unknown step %v", st.Kind)
}

// fetchTarget fetches the version to upgrade to; a failure is recorded (kind Artifact) and
// retried later or on a new plan.
func (w *worker) fetchTarget(ctx context.Context, target string) error {
	w.at = w.l.Release(w.svc, target)
	rel, err := w.release(ctx, target)
	if err != nil {
		return err
	}
	err = w.fetchStaging(ctx, rel)
	if errors.Is(err, errPlanChanged) {
		w.log.Info("plan changed during the fetch; looking again", "version", target)
		return nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.recordFailure(ctx, target, zklayout.FailureArtifact, err)
		w.retryAt = time.Now().Add(w.a.cfg.MaxRetryInterval)
		w.waitOn = append(w.waitOn, watchKey(rollout.Watch{Kind: rollout.WatchData, Path: w.l.StagingService(w.svc)}))
		return w.waiting("artifact fetch failed; retrying later or on a new plan", "version", target, "err", err.Error())
	}
	return nil
}

// register makes current/<svc>/<node> this session's, with the running version and the node's
// labels. A registration under this node's name that is not that — left by a previous session
// of this node (crash, expiry), or malformed (written by hand) — is replaced in one
// transaction: the agent repairs its own part of the tree. Registrations are only ever created
// and deleted, never set (the reader's cache relies on it).
func (w *worker) register(ctx context.Context, st rollout.Step) error {
	p := w.l.CurrentNode(w.svc, w.a.cfg.Node)
	w.at = p
	data, err := w.registration(st.Version)
	if err != nil {
		return err
	}
	if st.Replace {
		w.log.Info("replacing this node's registration", "znode", p, "why", st.Reason)
		err = w.zk.Multi(ctx, zkclient.DeleteOp(p, -1), zkclient.CreateOp(p, data, zkclient.Ephemeral))
	} else {
		_, err = w.zk.Create(ctx, p, data, zkclient.Ephemeral)
		if errors.Is(err, zkclient.ErrNoNode) {
			// current/<svc> itself is missing (a new service, or a tree deleted by hand).
			if err = w.zk.EnsurePath(ctx, w.l.CurrentService(w.svc)); err == nil {
				_, err = w.zk.Create(ctx, p, data, zkclient.Ephemeral)
			}
		}
		if err == nil {
			w.log.Info("registered online", "version", st.Version)
		}
	}
	if err != nil {
		return fmt.Errorf("register %s on %s: %w", w.svc, st.Version, err)
	}
	w.setRegistered()
	w.a.cfg.Metrics.online(w.svc, st.Version)
	return nil
}

// leave deletes this node's staging children.
func (w *worker) leave(ctx context.Context, children []string) error {
	for _, c := range children {
		if err := w.zk.Delete(ctx, w.l.StagingChild(w.svc, c), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			return err
		}
	}
	return nil
}

// stage queues this node for the version (ready to roll), after removing its other children
// (of dead sessions, of other versions, malformed).
func (w *worker) stage(ctx context.Context, st rollout.Step) error {
	w.at = w.l.StagingService(w.svc)
	if err := w.leave(ctx, st.Remove); err != nil {
		return err
	}
	data, err := zklayout.Encode(&zklayout.Staged{Node: w.a.cfg.Node, Version: st.Version, State: zklayout.StagedReady,
		PinnedBytes: w.warm.Bytes, Since: time.Now().UTC(), Domain: st.Domain})
	if err != nil {
		return err
	}
	created, err := w.zk.Create(ctx, w.l.StagingPrefix(w.svc, w.a.cfg.Node), data, zkclient.EphemeralSequential)
	if err != nil {
		return fmt.Errorf("stage %s/%s: %w", w.svc, st.Version, err)
	}
	w.log.Info("staged: ready to roll", "version", st.Version, "znode", created)
	return nil
}

// decideAndUpgrade runs the roll call, takes the node offline in one transaction and upgrades.
func (w *worker) decideAndUpgrade(root, ctx context.Context, snap *rollout.Snapshot, st rollout.Step) error {
	w.at = w.l.Release(w.svc, st.Version)
	rel, err := w.release(ctx, st.Version)
	if err != nil {
		return err
	}
	w.at = w.l.StagingChild(w.svc, st.Child)
	plan := snap.Plan
	gate, why := w.holds(ctx, plan, rel, true)
	if wrote, err := w.setHold(ctx, snap, st.Child, gate, why); err != nil || wrote && why == "" {
		// The child's version moved: decide again from a fresh read.
		return err
	}
	if why != "" {
		w.retryAt = time.Now().Add(holdPeriod(plan, gate))
		w.a.cfg.Metrics.gate(w.svc, gate)
		return w.waiting(gate+": "+why, "gate", gate)
	}
	admit, answered, online, round, err := w.rollCall(ctx, plan, snap.Current, st.Admit, st.Floors)
	if err != nil {
		return err
	}
	if len(admit) == 0 {
		w.a.cfg.Metrics.rollCalled(w.svc, ResultTooFew)
		// Registered nodes that do not answer may be dead machines whose sessions have not
		// expired yet: they do not count. Try a new round when current/ changes or later.
		w.retryAt = time.Now().Add(w.a.cfg.RollCallWait)
		changed, err := w.arm(ctx, []rollout.Watch{{Kind: rollout.WatchChildren, Path: w.l.CurrentService(w.svc), Seen: snap.CurrentStat}})
		if err != nil {
			return err
		}
		if changed {
			// current/ changed since the decision read it: a new round at once.
			w.retryAt = time.Time{}
			return nil
		}
		return w.waiting("roll call: too few online nodes answered for another node to go down",
			"round", round, "answered", answered, "othersOnline", online-1, "minAvailable", plan.MinAvailable)
	}
	w.a.cfg.Metrics.rollCalled(w.svc, ResultSuccess)
	w.log.V(1).Info("roll call answered", "round", round, "answered", answered, "minAvailable", plan.MinAvailable,
		"admitted", len(admit), "batch", len(st.Admit))
	admitted, err := w.decide(ctx, st, admit, round)
	if err != nil {
		if errors.Is(err, zkclient.ErrBadVersion) || errors.Is(err, zkclient.ErrNoNode) {
			w.log.Info("lost the turn before stopping; re-evaluating", "err", err.Error())
			return nil
		}
		return err
	}
	w.a.cfg.Metrics.admittedOthers(w.svc, admitted-1)
	return w.upgrade(root, ctx, rel, w.a.cfg.Backend.Status(w.svc).Version, st.Child, st.MinHealthy, st.Bake)
}

// upgradeAdmitted upgrades a node another node's decision admitted. The decision checked the
// quorum and the failures; the node confirms in one transaction that its mark still stands and
// that no failure was recorded since it read them, then stops, as the decider does right after
// its own transaction.
func (w *worker) upgradeAdmitted(root, ctx context.Context, snap *rollout.Snapshot, st rollout.Step) error {
	w.at = w.l.Release(w.svc, st.Version)
	rel, err := w.release(ctx, st.Version)
	if err != nil {
		return err
	}
	w.at = w.l.StagingChild(w.svc, st.Child)
	w.registered.Store(false)
	if err := w.zk.Multi(ctx,
		zkclient.CheckOp(w.l.FailureService(w.svc), st.FailuresVersion),
		zkclient.CheckOp(w.l.StagingChild(w.svc, st.Child), st.ChildVersion)); err != nil {
		if errors.Is(err, zkclient.ErrBadVersion) || errors.Is(err, zkclient.ErrNoNode) {
			w.log.Info("admitted, but the state moved on before stopping; re-evaluating", "err", err.Error())
			return nil
		}
		return fmt.Errorf("confirm admission of %s to %s: %w", w.svc, st.Version, err)
	}
	if _, why := w.holds(ctx, snap.Plan, rel, false); why != "" {
		// Registering again only raises the count; the node stages anew and asks again when
		// its own turn comes.
		w.log.Info("admitted, but this node's preStopCheck says not now: registering again", "why", why, "version", st.Version)
		return w.finish(ctx, st.Child, w.a.cfg.Backend.Status(w.svc).Version)
	}
	w.log.Info("admitted to upgrade", "reason", st.Reason, "round", st.Round, "version", st.Version)
	return w.upgrade(root, ctx, rel, w.a.cfg.Backend.Status(w.svc).Version, st.Child, st.MinHealthy, st.Bake)
}

// complete removes the service's deploy entries once its rollout is complete
// (rollout.Complete), so the next service's rollout can begin even when the operator is down.
func (w *worker) complete(ctx context.Context, st rollout.Step) error {
	for _, e := range st.Entries {
		if err := w.zk.Delete(ctx, w.l.DeployEntry(e.Child), e.Version); err == nil {
			w.log.Info("service rollout complete; removed its deploy queue entry", "version", st.Version, "entry", e.Child)
		}
	}
	return nil
}

// promClient asks alert gates' Prometheus servers.
var promClient = &http.Client{Timeout: 10 * time.Second}

// holds asks the plan's alert gate (alerts: the decider only; it holds every node alike) and
// this node's preStopCheck: the gate that says "not now" and why, or "".
func (w *worker) holds(ctx context.Context, plan *zklayout.Plan, rel *zklayout.Release, alerts bool) (gate, why string) {
	if plan == nil {
		return "", ""
	}
	if g := plan.AlertGate; alerts && g != nil {
		if why := veto.Alerts(ctx, promClient, g); why != "" {
			return rollout.GateAlert, why
		}
	}
	if c := plan.PreStopCheck; c != nil {
		// The check is about the service as it runs: its environment is the running version's.
		env := rel
		if running := w.a.cfg.Backend.Status(w.svc).Version; running != "" && running != rel.Version {
			if r, err := w.release(ctx, running); err == nil {
				env = r
			}
		}
		_, _, vars := w.runEnv(env)
		if why := veto.StopCheck(ctx, c, w.a.cfg.Address, vars); why != "" {
			return rollout.GatePreStopCheck, why
		}
	}
	return "", ""
}

// holdPeriod is how long a node told "not now" waits before asking again.
func holdPeriod(plan *zklayout.Plan, gate string) time.Duration {
	s := 10
	switch {
	case gate == rollout.GateAlert && plan.AlertGate != nil:
		s = plan.AlertGate.PeriodSeconds
	case gate == rollout.GatePreStopCheck && plan.PreStopCheck != nil:
		s = plan.PreStopCheck.PeriodSeconds
	}
	return time.Duration(max(s, 1)) * time.Second
}

// setHold writes why this node holds (or that it no longer does) into its ready staging child,
// for the operator's status and can-stop. It reports whether it wrote (the child's version
// moved). A child that moved or went meanwhile is left to the next step.
func (w *worker) setHold(ctx context.Context, snap *rollout.Snapshot, child, gate, why string) (bool, error) {
	text := ""
	if why != "" {
		text = gate + ": " + why
	}
	for _, q := range snap.Queue {
		if q.Child != child || !q.Loaded || q.Bad != nil {
			continue
		}
		if q.Staged.Hold == text {
			return false, nil
		}
		staged := q.Staged
		staged.Hold = text
		data, err := zklayout.Encode(&staged)
		if err != nil {
			return false, fmt.Errorf("hold of %s: %w", child, err)
		}
		if _, err := w.zk.Set(ctx, w.l.StagingChild(w.svc, child), data, q.Version); err != nil {
			if errors.Is(err, zkclient.ErrBadVersion) || errors.Is(err, zkclient.ErrNoNode) {
				return true, nil
			}
			return false, fmt.Errorf("write hold of %s: %w", child, err)
		}
		return true, nil
	}
	return false, nil
}
