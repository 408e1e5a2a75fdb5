package sim

import (
	"errors"
	"fmt"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zkmodel"
)

// errWait: the step waits (on waitOn, or the retry timer).
var errWait = errors.New("wait")

// worker is one service's worker on one machine for one session: nodeagent's worker with its
// step (step.go) executed against the model.
type worker struct {
	w      *world
	mc     *machine
	svc    *service
	reader *rollout.Reader
	need   rollout.Need
	// armed maps watch keys to the model's watch; fired are those whose event was delivered.
	armed  map[string]zkmodel.WatchID
	fired  map[string]bool
	waitOn []string
	// waiting: in waitAny; retry: a retryAt timer is set (or a backoff after an error).
	waiting    bool
	retry      bool
	registered bool
	checked    string
	rc         *rollCall
	up         *upgrade
	// pend is a decided step whose execution is a later event (other events interleave
	// between a step's read and its writes, as between the real agent's round trips).
	pend *pending
}

type pending struct {
	snap *rollout.Snapshot
	st   rollout.Step
}

type rollCall struct {
	snap      *rollout.Snapshot
	st        rollout.Step
	plan      *zklayout.Plan
	round     int32
	regs      map[string]string
	answered  map[string]bool
	startTick int
	watch     zkmodel.WatchID
	fired     bool
}

type upgrade struct {
	from, to, child string
	readyAt         int
}

func (k *worker) proc() *proc { return k.mc.procs[k.svc.idx] }

func (k *worker) sess() zkmodel.SessionID { return k.mc.session }

func (k *worker) logf(format string, args ...any) {
	k.w.logf(k.mc.name+"/"+k.svc.name+": "+format, args...)
}

// runnable: the worker would step now (not waiting, or a watch it waits on fired).
func (k *worker) runnable() bool {
	if k.rc != nil || k.up != nil || k.pend != nil {
		return false
	}
	if !k.waiting {
		return true
	}
	for _, key := range k.waitOn {
		if k.fired[key] {
			return true
		}
	}
	return false
}

// wake ends a wait as waitAny does: by a fired watch it waited on (forgotten), or the timer.
func (k *worker) wake() {
	if k.waiting {
		for _, key := range k.waitOn {
			if k.fired[key] {
				delete(k.fired, key)
				delete(k.armed, key)
				break
			}
		}
	}
	k.waiting = false
}

func (k *worker) timerWake() {
	k.waiting, k.retry = false, false
}

// run is one turn of nodeagent's worker.run loop: one step, then wait or go on.
func (k *worker) run() {
	k.wake()
	k.settle(k.step())
}

// execPending arms and executes the step decided earlier.
func (k *worker) execPending() {
	p := k.pend
	k.pend = nil
	k.settle(k.armAndExecute(p.snap, p.st))
}

// settle is the end of one turn of the run loop: go on, wait, or back off after an error.
func (k *worker) settle(err error) {
	switch {
	case err == nil:
	case errors.Is(err, errWait):
		k.waiting = true
	default:
		k.logf("step failed: %v", err)
		// Backoff: a timer.
		k.waitOn = nil
		k.waiting, k.retry = true, true
	}
}

func (k *worker) local() rollout.Local {
	p := k.proc()
	return rollout.Local{Node: k.mc.name, Labels: k.mc.labels, Session: int64(k.sess()), Running: p.running, Version: p.version,
		Checked: k.checked, Current: p.current, Installed: func(v string) bool { return p.inst[v] }, Now: k.w.now()}
}

func (k *worker) lie(s *rollout.Snapshot) {
	if k.w.cfg.Mutate == MutateMinAvailable && s.Plan != nil {
		s.Plan.MinAvailable = 0
	}
	if k.w.cfg.Mutate == MutateIgnoreGates && s.Plan != nil {
		s.Plan.MaxUnavailable, s.Plan.Topology = 0, nil
	}
	if k.w.cfg.Mutate == MutateIgnoreCanary && s.Plan != nil {
		s.Plan.Canary = 0
	}
	if k.w.cfg.Mutate == MutateShortBake && s.Plan != nil && s.Plan.Canary > 0 {
		s.Plan.CanaryBakeSeconds = 1
	}
	if k.w.cfg.Mutate == MutateIgnoreQueue {
		own := s.Deploy[:0:0]
		for _, d := range s.Deploy {
			if d.Service == k.svc.name {
				own = append(own, d)
			}
		}
		s.Deploy = own
	}
}

// step mirrors nodeagent's worker.step: read, decide (reading more when asked), arm, execute.
func (k *worker) step() error {
	ctx := k.w.ctx
	snap, err := k.reader.Read(ctx, k.need)
	if err != nil {
		return err
	}
	k.lie(snap)
	local := k.local()
	st := rollout.Next(snap, local)
	for tries := 0; st.Kind == rollout.StepRead; tries++ {
		if tries == 3 {
			return fmt.Errorf("decision keeps asking for more of the state (%v): %s", st.Need, st.Reason)
		}
		if err := k.reader.ReadMore(ctx, snap, st.Need); err != nil {
			return err
		}
		k.lie(snap)
		st = rollout.Next(snap, local)
	}
	k.need = st.Used
	if st.Kind == rollout.StepComplete {
		// Held to ground truth when decided (what the read saw); the deletion may come later,
		// after a node registered again on the old version (it is requeued, as designed).
		k.w.truthfulCompletion(k.svc, "agent")
	}
	if st.Kind != rollout.StepAgain && k.w.rng.Intn(2) == 0 {
		k.logf("%s %s decided; arms and executes later", st.Kind, st.Version)
		k.pend = &pending{snap: snap, st: st}
		return nil
	}
	return k.armAndExecute(snap, st)
}

// armAndExecute is the rest of a step: arm the watches it names (a changed znode: step again
// at once), then execute it.
func (k *worker) armAndExecute(snap *rollout.Snapshot, st rollout.Step) error {
	changed, err := k.arm(st.Watch)
	if err != nil {
		return err
	}
	if changed {
		k.w.count("stale snapshot at arming")
		k.logf("%s: snapshot stale, again", st.Kind)
		return nil
	}
	if st.Registered && !k.registered {
		k.setRegistered()
	}
	return k.execute(snap, st)
}

// arm mirrors worker.arm.
func (k *worker) arm(watches []rollout.Watch) (changed bool, err error) {
	for key := range k.fired {
		delete(k.armed, key)
		delete(k.fired, key)
	}
	k.waitOn = k.waitOn[:0]
	m, s := k.w.m, k.sess()
	for _, wt := range watches {
		key := watchKey(wt)
		k.waitOn = append(k.waitOn, key)
		if _, ok := k.armed[key]; ok {
			continue
		}
		var now rollout.Stat
		var id zkmodel.WatchID
		switch wt.Kind {
		case rollout.WatchChildren:
			var st zkmodel.Stat
			_, st, id, err = m.ChildrenW(s, wt.Path)
			if errors.Is(err, zkclient.ErrNoNode) {
				var exists bool
				exists, st, id, err = m.ExistsW(s, wt.Path)
				if err == nil {
					now = rollout.Stat{Exists: exists, Version: st.Version, CVersion: st.CVersion}
				}
			} else if err == nil {
				now = rollout.Stat{Exists: true, Version: st.Version, CVersion: st.CVersion}
			}
		default:
			var exists bool
			var st zkmodel.Stat
			exists, st, id, err = m.ExistsW(s, wt.Path)
			if err == nil {
				now = rollout.Stat{Exists: exists, Version: st.Version, CVersion: st.CVersion}
			}
		}
		if err != nil {
			return false, err
		}
		k.armed[key] = id
		k.mc.watchOwner[id] = watchRef{svc: k.svc.idx, key: key}
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
	return "data:" + wt.Path
}

func (k *worker) setRegistered() {
	k.registered = true
	k.mc.answerers[k.svc.idx].kicked = true
}

// execute mirrors worker.execute.
func (k *worker) execute(snap *rollout.Snapshot, st rollout.Step) error {
	w, l, s, svc := k.w, k.w.l, k.sess(), k.svc.name
	switch st.Kind {
	case rollout.StepWait:
		k.logf("wait: %s %v", st.Reason, st.Fields)
		if !st.RetryAt.IsZero() {
			// A canary's bake (the simulation has no windows): look again later.
			k.retry = true
		}
		return errWait
	case rollout.StepAgain:
		k.logf("again: %s", st.Reason)
		return nil
	case rollout.StepEnsurePaths:
		k.logf("ensure paths")
		for _, p := range []string{l.CurrentService(svc), l.FailureService(svc)} {
			if err := w.ensurePath(s, p); err != nil {
				return err
			}
		}
		return nil
	case rollout.StepStart:
		return k.start(st)
	case rollout.StepAdopt:
		return k.adopt(st.Version, st.PlanVersion)
	case rollout.StepRegister:
		return k.register(st)
	case rollout.StepLeave:
		k.logf("leave %v (%s)", st.Remove, st.Reason)
		return k.leave(st.Remove)
	case rollout.StepClearArtifactFailure:
		k.logf("clear artifact failure")
		k.clearFailure(zklayout.FailureArtifact)
		return nil
	case rollout.StepFetch:
		// Artifact download is not modeled: the fetch succeeds at once.
		k.logf("fetch %s", st.Version)
		k.proc().inst[st.Version] = true
		return nil
	case rollout.StepStage:
		if err := k.leave(st.Remove); err != nil {
			return err
		}
		data, err := zklayout.Encode(&zklayout.Staged{Node: k.mc.name, Version: st.Version, State: zklayout.StagedReady, Since: w.now(), Domain: st.Domain})
		if err != nil {
			return err
		}
		created, err := w.m.Create(s, l.StagingPrefix(svc, k.mc.name), data, zkmodel.EphemeralSequential)
		if err != nil {
			return fmt.Errorf("stage %s/%s: %w", svc, st.Version, err)
		}
		k.logf("stage %s: %s", st.Version, created)
		return nil
	case rollout.StepDecide:
		return k.beginRollCall(snap, st)
	case rollout.StepUpgrade:
		return k.upgradeAdmitted(st)
	case rollout.StepComplete:
		for _, e := range st.Entries {
			if err := w.m.Delete(s, l.DeployEntry(e.Child), e.Version); err == nil {
				w.count("deploy entry removed by an agent")
				k.logf("complete %s: removed deploy entry %s", st.Version, e.Child)
				w.checkCompletion(k.svc)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown step %v", st.Kind)
}

// start mirrors worker.start: fetch (instant), switch, run and check.
func (k *worker) start(st rollout.Step) error {
	p := k.proc()
	v := st.Version
	p.inst[v] = true
	if p.current != v {
		p.previous, p.current = p.current, v
	}
	k.checked = ""
	if !p.start(v, k.w.tick) {
		p.running = false
		k.logf("start %s %v: unhealthy, stopped; retry later", v, st.Fields)
		k.retry = true
		return errWait
	}
	k.checked = v
	k.logf("start %s %v: healthy", v, st.Fields)
	if v == k.svc.plan.Version {
		if d := k.w.depIncomplete(k.svc); d != "" {
			k.w.find("start-ahead-of-order", "%s starts %s on %s while %s, which it depends on, has not completed", k.mc.name, k.svc.name, v, d)
		}
	}
	return nil
}

// adopt mirrors worker.checkAdopted.
func (k *worker) adopt(version, planVersion string) error {
	p := k.proc()
	if p.healthy {
		k.checked = version
		k.logf("adopt %s: healthy", version)
		return nil
	}
	k.logf("adopt %s: unhealthy", version)
	if version == planVersion {
		k.recordFailure(version, zklayout.FailureHealthCheck)
	}
	if prev := p.previous; version == planVersion && prev != "" && prev != version && p.current == version {
		k.w.count("adopted process rolled back")
		k.logf("roll back adopted %s -> %s", version, prev)
		p.running = false
		p.current, p.previous = prev, p.current
		k.checked = ""
		if p.start(prev, k.w.tick) {
			k.checked = prev
		}
		return nil
	}
	k.retry = true
	return errWait
}

// register mirrors worker.register.
func (k *worker) register(st rollout.Step) error {
	w, s := k.w, k.sess()
	p := w.l.CurrentNode(k.svc.name, k.mc.name)
	data, err := zklayout.Encode(&zklayout.Current{Node: k.mc.name, Version: st.Version, Health: zklayout.HealthHealthy,
		Since: w.now(), Labels: k.mc.labels})
	if err != nil {
		return err
	}
	if st.Replace {
		err = w.m.Multi(s, zkmodel.DeleteOp(p, -1), zkmodel.CreateOp(p, data, zkmodel.Ephemeral))
	} else {
		_, err = w.m.Create(s, p, data, zkmodel.Ephemeral)
		if errors.Is(err, zkclient.ErrNoNode) {
			if err = w.ensurePath(s, w.l.CurrentService(k.svc.name)); err == nil {
				_, err = w.m.Create(s, p, data, zkmodel.Ephemeral)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("register %s on %s: %w", k.svc.name, st.Version, err)
	}
	k.logf("register %s (replace %v: %s)", st.Version, st.Replace, st.Reason)
	k.setRegistered()
	return nil
}

func (k *worker) leave(children []string) error {
	for _, c := range children {
		if err := k.w.m.Delete(k.sess(), k.w.l.StagingChild(k.svc.name, c), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			return err
		}
	}
	return nil
}

// recordFailure mirrors worker.recordFailure (best effort).
func (k *worker) recordFailure(version, kind string) {
	w, s, l, svc := k.w, k.sess(), k.w.l, k.svc.name
	data, err := zklayout.Encode(&zklayout.Failure{Node: k.mc.name, Version: version, Kind: kind, Reason: "simulated", Time: w.now()})
	if err == nil {
		err = w.ensurePath(s, l.FailureService(svc))
	}
	if err == nil {
		p := l.Failure(svc, k.mc.name)
		bump := zkmodel.SetOp(l.FailureService(svc), nil, -1)
		old, _, gerr := w.m.Get(s, p)
		var prev zklayout.Failure
		switch {
		case errors.Is(gerr, zkclient.ErrNoNode):
			err = w.m.Multi(s, bump, zkmodel.CreateOp(p, data, zkmodel.Persistent))
		case gerr != nil:
			err = gerr
		case kind != zklayout.FailureHealthCheck && zklayout.Decode(old, &prev) == nil && prev.Kind == zklayout.FailureHealthCheck:
			return
		default:
			err = w.m.Multi(s, bump, zkmodel.SetOp(p, data, -1))
		}
	}
	if err != nil {
		k.logf("could not record failure %s %s: %v", kind, version, err)
		return
	}
	k.w.count("failure recorded")
	k.logf("recorded failure %s %s", kind, version)
}

func (k *worker) clearFailure(kind string) {
	p := k.w.l.Failure(k.svc.name, k.mc.name)
	data, st, err := k.w.m.Get(k.sess(), p)
	if err != nil {
		return
	}
	var f zklayout.Failure
	if zklayout.Decode(data, &f) == nil && f.Kind == kind {
		_ = k.w.m.Delete(k.sess(), p, st.Version)
	}
}

// beginRollCall mirrors the start of decideAndUpgrade and rollCall: a new round, then count.
func (k *worker) beginRollCall(snap *rollout.Snapshot, st rollout.Step) error {
	w, s := k.w, k.sess()
	p := w.l.RollCall(k.svc.name)
	zst, err := w.m.Set(s, p, []byte(k.mc.name), -1)
	if errors.Is(err, zkclient.ErrNoNode) {
		if err = w.ensurePath(s, p); err == nil {
			zst, err = w.m.Set(s, p, []byte(k.mc.name), -1)
		}
	}
	if err != nil {
		return fmt.Errorf("start roll call of %s: %w", k.svc.name, err)
	}
	regs, _ := rollout.Online(snap.Current, snap.Plan)
	k.rc = &rollCall{snap: snap, st: st, plan: snap.Plan, round: zst.Version, regs: regs, startTick: w.tick}
	if k.svc.roundStart == nil {
		k.svc.roundStart = map[int32]int{}
	}
	k.svc.roundStart[zst.Version] = w.tick
	k.logf("roll call round %d for %s (online %d, min %d)", zst.Version, st.Version, len(regs), snap.Plan.MinAvailable)
	return k.countRollCall()
}

// countRollCall is one turn of rollCall's loop: watch, count, decide when enough answered.
func (k *worker) countRollCall() error {
	w, s, rc := k.w, k.sess(), k.rc
	children, _, id, err := w.m.ChildrenW(s, w.l.RollCall(k.svc.name))
	if err != nil {
		k.rc = nil
		return fmt.Errorf("roll call %d of %s: %w", rc.round, k.svc.name, err)
	}
	rc.watch, rc.fired = id, false
	k.mc.watchOwner[id] = watchRef{svc: k.svc.idx, key: "rollcall"}
	ans := answers(children, rc.round, rc.regs, k.mc.name)
	if w.cfg.Mutate == MutateSkipRollCall {
		for n := range rc.regs {
			if n != k.mc.name {
				ans[n] = true
			}
		}
	}
	n := rollout.AdmissibleFloors(rc.st.Admit, ans, rc.plan.MinAvailable, rc.st.Floors)
	if w.cfg.Mutate == MutateAdmitAll && n > 0 {
		n = len(rc.st.Admit)
	}
	if n == len(rc.st.Admit) {
		k.rc = nil
		return k.decide(rc, rc.st.Admit, len(ans))
	}
	rc.answered = ans
	k.logf("roll call round %d: %d answered, waiting", rc.round, len(ans))
	return nil
}

func answers(children []string, round int32, registered map[string]string, self string) map[string]bool {
	seen := map[string]bool{}
	for _, c := range children {
		r, node, err := zklayout.ParseRollCallAnswer(c)
		if err != nil || r < round || node == self || seen[node] {
			continue
		}
		if _, ok := registered[node]; ok {
			seen[node] = true
		}
	}
	return seen
}

// rollCallTimeout is the roll call's wait passing with too few answers (decideAndUpgrade's !ok).
func (k *worker) rollCallTimeout() {
	rc := k.rc
	k.rc = nil
	if n := rollout.AdmissibleFloors(rc.st.Admit, rc.answered, rc.plan.MinAvailable, rc.st.Floors); n > 0 {
		// The wait passed with enough answers for part of the batch: that part goes.
		k.w.count("roll call admitted part of the batch")
		if err := k.decide(rc, rc.st.Admit[:n], len(rc.answered)); err != nil {
			k.logf("step failed: %v", err)
			k.waitOn = nil
			k.waiting, k.retry = true, true
		}
		return
	}
	k.w.count("roll call too few")
	k.logf("roll call round %d: too few answered", rc.round)
	k.retry = true
	changed, err := k.arm([]rollout.Watch{{Kind: rollout.WatchChildren, Path: k.w.l.CurrentService(k.svc.name), Seen: rc.snap.CurrentStat}})
	if err != nil {
		k.logf("step failed: %v", err)
		k.waitOn = nil
		k.waiting = true
		return
	}
	if changed {
		k.retry = false
		k.waiting = false
		return
	}
	k.waiting = true
}

// decide mirrors worker.decide and then starts the upgrade (the process stops).
func (k *worker) decide(rc *rollCall, admit []rollout.Admitted, answered int) error {
	w, l, s, st := k.w, k.w.l, k.sess(), rc.st
	ops := []zkmodel.Op{zkmodel.CheckOp(l.FailureService(k.svc.name), st.FailuresVersion)}
	marks, err := rollout.Marks(k.mc.name, st.Version, admit, rc.round, w.now())
	if err != nil {
		return err
	}
	for _, m := range marks {
		ops = append(ops,
			zkmodel.SetOp(l.StagingChild(k.svc.name, m.Child), m.Data, m.ChildVersion),
			zkmodel.DeleteOp(l.CurrentNode(k.svc.name, m.Node), -1))
	}
	k.registered = false
	if w.cfg.Mutate == MutateSkipFailureCheck {
		ops = ops[1:]
	}
	err = w.m.Multi(s, ops...)
	if err != nil {
		if errors.Is(err, zkclient.ErrBadVersion) || errors.Is(err, zkclient.ErrNoNode) {
			w.count("decision lost the turn")
			k.logf("decide %s: lost the turn (%v)", st.Version, err)
			return nil
		}
		return err
	}
	p := k.proc()
	w.count("voluntary stop")
	if len(admit) > 1 {
		w.count("batch admitted")
	}
	k.logf("decide %s: stop %s (online %d, answered %d, min %d, round %d, admitted %d)", st.Version, p.version, st.Online, answered, rc.plan.MinAvailable, rc.round, len(admit))
	w.checkStop(k, rc, st)
	p.running = false
	k.up = &upgrade{from: p.version, to: st.Version, child: st.Child, readyAt: w.tick + 1 + w.rng.Intn(4)}
	return nil
}

// upgradeAdmitted mirrors worker.upgradeAdmitted: confirm the mark and the failures, then stop.
func (k *worker) upgradeAdmitted(st rollout.Step) error {
	w, l, s := k.w, k.w.l, k.sess()
	k.registered = false
	ops := []zkmodel.Op{
		zkmodel.CheckOp(l.FailureService(k.svc.name), st.FailuresVersion),
		zkmodel.CheckOp(l.StagingChild(k.svc.name, st.Child), st.ChildVersion)}
	if w.cfg.Mutate == MutateSkipFailureCheck {
		ops = ops[1:]
	}
	if err := w.m.Multi(s, ops...); err != nil {
		if errors.Is(err, zkclient.ErrBadVersion) || errors.Is(err, zkclient.ErrNoNode) {
			w.count("admitted node lost the turn")
			k.logf("upgrade %s: admitted, but the state moved on (%v)", st.Version, err)
			return nil
		}
		return err
	}
	round := st.Round
	rc := &rollCall{round: round, startTick: k.svc.roundStart[round]}
	p := k.proc()
	w.count("voluntary stop")
	w.count("admitted stop")
	k.logf("upgrade %s: admitted (%s, round %d): stop %s", st.Version, st.Reason, round, p.version)
	w.checkStop(k, rc, st)
	p.running = false
	k.up = &upgrade{from: p.version, to: st.Version, child: st.Child, readyAt: w.tick + 1 + w.rng.Intn(4)}
	return nil
}

// finishUpgrade mirrors the rest of worker.upgrade once the process restarted.
func (k *worker) finishUpgrade() {
	up, p := k.up, k.proc()
	k.up = nil
	p.inst[up.to] = true
	p.previous, p.current = p.current, up.to
	k.checked = ""
	version := up.to
	if p.start(up.to, k.w.tick) {
		k.checked = up.to
		k.logf("upgraded to %s: healthy", up.to)
	} else {
		k.w.count("upgrade unhealthy")
		k.logf("upgrade to %s: unhealthy; rolling back to %s", up.to, up.from)
		p.running = false
		k.recordFailure(up.to, zklayout.FailureHealthCheck)
		p.previous, p.current = p.current, up.from
		if p.start(up.from, k.w.tick) {
			k.checked = up.from
		}
		version = up.from
	}
	if err := k.finish(up.child, version); err != nil {
		k.logf("step failed: %v", err)
		k.waitOn = nil
		k.waiting, k.retry = true, true
		return
	}
	k.waiting = false
}

// finish mirrors worker.finish.
func (k *worker) finish(child, version string) error {
	w, l, s := k.w, k.w.l, k.sess()
	data, err := zklayout.Encode(&zklayout.Current{Node: k.mc.name, Version: version, Health: zklayout.HealthHealthy,
		Since: w.now(), Labels: k.mc.labels})
	if err != nil {
		return err
	}
	err = w.m.Multi(s,
		zkmodel.CreateOp(l.CurrentNode(k.svc.name, k.mc.name), data, zkmodel.Ephemeral),
		zkmodel.DeleteOp(l.StagingChild(k.svc.name, child), -1))
	if err != nil {
		return fmt.Errorf("re-register %s on %s: %w", k.svc.name, version, err)
	}
	k.logf("re-registered on %s, left the queue", version)
	k.setRegistered()
	return nil
}

// answerer mirrors nodeagent's answerer: it answers each new round while its worker's
// registration stands and the service runs.
type answerer struct {
	w        *world
	mc       *machine
	svc      *service
	run      bool // first turn of the session, or after an error
	kicked   bool
	watch    zkmodel.WatchID
	fired    bool
	last     int32
	answered int32
}

func (a *answerer) runnable() bool { return a.run || a.kicked || a.fired }

func (a *answerer) step() {
	a.run, a.kicked, a.fired = false, false, false
	w, s := a.w, a.mc.session
	p := w.l.RollCall(a.svc.name)
	exists, st, id, err := w.m.ExistsW(s, p)
	if err != nil {
		a.run = true
		return
	}
	a.watch = id
	a.mc.watchOwner[id] = watchRef{svc: a.svc.idx, answerer: true}
	if exists && st.Version > 0 && st.Version != a.answered {
		if err := a.answer(st.Version); err != nil {
			w.logf("%s/%s: answer roll call %d: %v", a.mc.name, a.svc.name, st.Version, err)
			a.run = true
		}
	}
}

func (a *answerer) answer(round int32) error {
	w, s := a.w, a.mc.session
	wk := a.mc.workers[a.svc.idx]
	if !wk.registered || !wk.proc().running {
		return nil
	}
	create := zkmodel.CreateOp(w.l.RollCallAnswer(a.svc.name, round, a.mc.name), nil, zkmodel.Ephemeral)
	var err error
	if a.last != 0 && a.last != round {
		err = w.m.Multi(s, zkmodel.DeleteOp(w.l.RollCallAnswer(a.svc.name, a.last, a.mc.name), -1), create)
		if errors.Is(err, zkclient.ErrNoNode) {
			err = w.m.Multi(s, create)
		}
	} else {
		err = w.m.Multi(s, create)
	}
	if err != nil && !errors.Is(err, zkclient.ErrNodeExists) {
		return err
	}
	a.last, a.answered = round, round
	w.logf("%s/%s: answer roll call %d", a.mc.name, a.svc.name, round)
	return nil
}
