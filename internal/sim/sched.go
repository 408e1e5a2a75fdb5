package sim

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zkmodel"
)

type evKind int

const (
	evStep evKind = iota
	evExecute
	evRollCallCount
	evAnswer
	evDeliver
	evReconnect
	evUpgradeDone
	evMachineBack
	evAgentRestart
	evExpire
	// timers: picked with low probability, or when nothing else is enabled
	evRetry
	evRollCallTimeout
	evOperator
	evPublish
)

type event struct {
	kind evKind
	m, s int
}

// Run simulates one world drawn from seed and returns the first invariant it violates.
func Run(seed int64, cfg Config) (res Result) {
	w := newWorld(seed, cfg)
	res.Seed, res.Summary = seed, w.summary
	defer func() {
		if r := recover(); r != nil {
			w.fail("panic: %v", r)
		}
		res.Steps = w.tick
		res.Err = w.err
		res.Findings = w.findings
		res.Counts = w.counts
		if cfg.KeepTrace {
			res.Trace = w.trace
		} else if w.err != nil {
			res.Trace = w.trace[max(0, len(w.trace)-80):]
		}
	}()
	w.loop()
	return res
}

func (w *world) loop() {
	var evs, timers []event
	for w.err == nil {
		if w.tick >= w.cfg.MaxSteps {
			w.fail("no convergence within %d events: %s", w.cfg.MaxSteps, w.describe())
			return
		}
		evs, timers = w.enabled(evs[:0], timers[:0])
		// Faults, drawn with small probability until the budget is spent.
		if w.faults > 0 && (w.rng.Intn(40) == 0 || len(evs) == 0) {
			if w.fault() {
				w.faults--
				w.tick++
				w.checkModel()
				continue
			}
		}
		if len(evs) == 0 {
			if next, ok := w.nextTimed(); ok {
				w.tick = next
				continue
			}
			if w.faults == 0 && w.allUp() {
				w.behind = ""
				why := w.converged()
				if why == "" && w.behind != "" && len(timers) > 0 {
					// An entry waits behind a halted service, but a timer (a retry) may still
					// move it: not for good yet.
					why = w.behind
				} else if why == "" && w.behind != "" {
					w.find("requeued-behind-halted", "%s", w.behind)
				}
				if why == "" {
					if err := w.m.Check(); err != nil {
						w.fail("zkmodel.Check: %v", err)
					}
					w.logf("quiescent and converged")
					return
				}
			}
			if len(timers) == 0 {
				if w.faults > 0 {
					continue
				}
				w.fail("stuck: nothing can happen and the run has not converged: %s", w.converged())
				return
			}
		}
		var e event
		if len(timers) > 0 && (len(evs) == 0 || w.rng.Intn(25) == 0) {
			e = timers[w.rng.Intn(len(timers))]
		} else {
			e = evs[w.rng.Intn(len(evs))]
		}
		w.tick++
		w.do(e)
		w.checkModel()
	}
}

func (w *world) checkModel() {
	if w.tick%32 == 0 || w.cfg.KeepTrace {
		if err := w.m.Check(); err != nil {
			w.fail("zkmodel.Check: %v", err)
		}
	}
}

func (w *world) allUp() bool {
	for _, mc := range w.machines {
		if !mc.up || !mc.agentUp {
			return false
		}
	}
	return len(w.linger) == 0 && w.published
}

func (w *world) nextTimed() (int, bool) {
	best, ok := 0, false
	see := func(at int) {
		if at > w.tick && (!ok || at < best) {
			best, ok = at, true
		}
	}
	if !w.published {
		see(w.publishAt)
	}
	for _, l := range w.linger {
		see(l.expireAt)
	}
	for _, mc := range w.machines {
		switch {
		case !mc.up:
			see(mc.backAt)
		case !mc.agentUp:
			see(mc.agentAt)
		default:
			for _, k := range mc.workers {
				if k.up != nil {
					see(k.up.readyAt)
				}
			}
		}
	}
	return best, ok
}

func (w *world) enabled(evs, timers []event) ([]event, []event) {
	if !w.published && w.tick >= w.publishAt {
		evs = append(evs, event{kind: evPublish})
	}
	for i, l := range w.linger {
		if w.tick >= l.expireAt {
			evs = append(evs, event{kind: evExpire, m: i})
		}
	}
	for _, mc := range w.machines {
		if !mc.up {
			if w.tick >= mc.backAt {
				evs = append(evs, event{kind: evMachineBack, m: mc.idx})
			}
			continue
		}
		if !mc.agentUp {
			if w.tick >= mc.agentAt {
				evs = append(evs, event{kind: evAgentRestart, m: mc.idx})
			}
			continue
		}
		alive := w.m.Alive(mc.session)
		busy := false
		for _, k := range mc.workers {
			if k.up != nil {
				busy = true
				if w.tick >= k.up.readyAt {
					evs = append(evs, event{kind: evUpgradeDone, m: mc.idx, s: k.svc.idx})
				}
			}
		}
		if !alive {
			if !busy {
				evs = append(evs, event{kind: evReconnect, m: mc.idx})
			}
			continue
		}
		if w.m.Pending(mc.session) > 0 {
			evs = append(evs, event{kind: evDeliver, m: mc.idx})
		}
		for _, k := range mc.workers {
			switch {
			case k.rc != nil:
				if k.rc.fired {
					evs = append(evs, event{kind: evRollCallCount, m: mc.idx, s: k.svc.idx})
				} else {
					timers = append(timers, event{kind: evRollCallTimeout, m: mc.idx, s: k.svc.idx})
				}
			case k.up != nil:
			case k.pend != nil:
				evs = append(evs, event{kind: evExecute, m: mc.idx, s: k.svc.idx})
			case k.runnable():
				evs = append(evs, event{kind: evStep, m: mc.idx, s: k.svc.idx})
			case k.waiting && k.retry:
				timers = append(timers, event{kind: evRetry, m: mc.idx, s: k.svc.idx})
			}
			if a := mc.answerers[k.svc.idx]; a.runnable() {
				evs = append(evs, event{kind: evAnswer, m: mc.idx, s: k.svc.idx})
			}
		}
	}
	timers = append(timers, event{kind: evOperator})
	return evs, timers
}

func (w *world) do(e event) {
	var mc *machine
	if e.kind != evExpire && e.kind != evOperator && e.kind != evPublish {
		mc = w.machines[e.m]
	}
	switch e.kind {
	case evExpire:
		l := w.linger[e.m]
		w.linger = append(w.linger[:e.m], w.linger[e.m+1:]...)
		w.expire(l.m, l.s)
	case evMachineBack:
		mc.up = true
		w.logf("%s: machine back (services down)", mc.name)
		w.startAgent(mc)
	case evAgentRestart:
		w.logf("%s: agent restarts", mc.name)
		w.startAgent(mc)
	case evReconnect:
		w.logf("%s: agent saw its session end; new session", mc.name)
		w.startAgent(mc)
	case evUpgradeDone:
		mc.workers[e.s].finishUpgrade()
	case evDeliver:
		ev, _ := w.m.Deliver(mc.session)
		w.logf("deliver %s %s %s", mc.name, ev.Type, ev.Path)
		w.route(mc, ev)
	case evStep:
		mc.workers[e.s].run()
	case evExecute:
		mc.workers[e.s].execPending()
	case evRetry:
		k := mc.workers[e.s]
		k.logf("retry timer")
		k.timerWake()
		k.run()
	case evRollCallCount:
		k := mc.workers[e.s]
		if err := k.countRollCall(); err != nil {
			k.logf("step failed: %v", err)
			k.waitOn, k.waiting, k.retry = nil, true, true
		}
	case evRollCallTimeout:
		mc.workers[e.s].rollCallTimeout()
	case evAnswer:
		mc.answerers[e.s].step()
	case evOperator:
		w.operator()
	case evPublish:
		w.publish()
	}
}

// route hands a delivered watch event to whoever armed the watch.
func (w *world) route(mc *machine, ev zkmodel.Event) {
	ref, ok := mc.watchOwner[ev.Watch]
	if !ok || ev.Type == zkmodel.SessionExpired {
		return
	}
	delete(mc.watchOwner, ev.Watch)
	if ref.answerer {
		if a := mc.answerers[ref.svc]; a.watch == ev.Watch {
			a.fired = true
		}
		return
	}
	k := mc.workers[ref.svc]
	if ref.key == "rollcall" {
		if k.rc != nil && k.rc.watch == ev.Watch {
			k.rc.fired = true
		}
		return
	}
	if k.armed[ref.key] == ev.Watch {
		k.fired[ref.key] = true
	}
}

// fault injects one fault drawn from the seed; false when none applies.
func (w *world) fault() bool {
	kind := w.rng.Intn(3)
	var cands []*machine
	for _, mc := range w.machines {
		if mc.up && mc.agentUp && (kind != 2 || w.m.Alive(mc.session)) {
			cands = append(cands, mc)
		}
	}
	if len(cands) == 0 {
		return false
	}
	mc := cands[w.rng.Intn(len(cands))]
	switch kind {
	case 0: // agent crash: the host services keep running
		w.count("fault: agent crash")
		w.logf("fault: agent crash %s", mc.name)
		mc.agentUp = false
		mc.agentAt = w.tick + 2 + w.rng.Intn(12)
		for _, k := range mc.workers {
			if up := k.up; up != nil {
				p := k.proc()
				p.previous, p.current = p.current, up.to
				if w.rng.Intn(2) == 0 {
					p.start(up.to, w.tick)
					w.logf("%s/%s: left mid-upgrade running %s unchecked (healthy %v)", mc.name, k.svc.name, up.to, p.healthy)
				} else {
					w.logf("%s/%s: left mid-upgrade stopped, switched to %s", mc.name, k.svc.name, up.to)
				}
				k.up = nil
			}
		}
		w.lingerSession(mc, 1+w.rng.Intn(8))
	case 1: // machine crash
		w.count("fault: machine crash")
		w.logf("fault: machine crash %s", mc.name)
		mc.up, mc.agentUp = false, false
		mc.backAt = w.tick + 3 + w.rng.Intn(25)
		for _, k := range mc.workers {
			p := k.proc()
			if up := k.up; up != nil && w.rng.Intn(2) == 0 {
				p.previous, p.current = p.current, up.to
			}
			k.up = nil
			p.running = false
			p.lastFault = w.tick
		}
		w.lingerSession(mc, 1+w.rng.Intn(8))
	case 2: // session expiry alone
		w.count("fault: session expiry")
		w.logf("fault: session expiry %s", mc.name)
		w.expire(mc.idx, mc.session)
	}
	return true
}

// operator is the operator's requeue (controllers: requeue): a service with no entry of its
// plan's version that is not complete, while some registration runs another version, is
// queued again (a catch-up when every service it depends on is complete).
func (w *world) operator() {
	done := map[string]bool{}
	queued := map[string]bool{}
	names, _, err := w.m.Children(w.obs, w.l.Deploy())
	if err != nil {
		return
	}
	seqs, _ := zklayout.SortSeq(names)
	for _, q := range seqs {
		queued[q.Name] = true
	}
	if len(queued) == len(w.svcs) {
		return // every service is queued: nothing to requeue
	}
	for _, s := range w.svcs {
		if s.opReader == nil {
			s.opReader = rollout.NewReader(zkmodel.Reads{M: w.m, S: w.obs}, w.l, s.name, "", nil)
		}
		snap, err := s.opReader.Read(w.ctx, rollout.NeedAll)
		if err != nil || snap.Plan == nil {
			return
		}
		done[s.name] = rollout.Done(snap, snap.Plan.Version, snap.Plan, rollout.NeedOnline(snap.Plan.MinAvailable, len(w.machines)))
		if queued[s.name] || done[s.name] {
			continue
		}
		var behind []string
		current, _ := rollout.CurrentOf(snap.Current, snap.Plan)
		for _, c := range current {
			if c.Version != snap.Plan.Version {
				behind = append(behind, c.Node)
			}
		}
		if len(behind) == 0 {
			continue
		}
		catchUp := true
		for _, d := range snap.Plan.DependsOn {
			if !done[d] {
				catchUp = false
			}
		}
		if catchUp {
			// The catch-up's premise: what s depends on is complete. Held to ground truth, it
			// counts as completed for invariant 2.
			for _, d := range w.svcs {
				if slices.Contains(s.plan.DependsOn, d.name) && !d.completed {
					w.truthfulCompletion(d, "operator")
					d.completed = true
					w.logf("service %s completed (the operator's judgement, queueing a catch-up of %s)", d.name, s.name)
				}
			}
		}
		data, err := zklayout.Encode(&zklayout.DeployEntry{Deploy: "sim", Service: s.name, Version: v2, Generation: 1, CatchUp: catchUp})
		var name string
		if err == nil {
			name, err = w.m.Create(w.obs, w.l.DeployPrefix(s.name), data, zkmodel.PersistentSequential)
		}
		if !w.ok(err, "requeue "+s.name) {
			return
		}
		w.count("operator requeue")
		w.logf("operator: requeue %s (%s behind, catch-up %v)", name, strings.Join(behind, ","), catchUp)
	}
}

// entries counts the deploy entries of svc.
func (w *world) entries(svc string) int {
	names, _, _ := w.m.Children(w.obs, w.l.Deploy())
	n := 0
	for _, c := range names {
		if q, err := zklayout.ParseSeq(c); err == nil && q.Name == svc {
			n++
		}
	}
	return n
}

func (w *world) describe() string {
	var b strings.Builder
	for _, mc := range w.machines {
		fmt.Fprintf(&b, "%s[up %v agent %v]", mc.name, mc.up, mc.agentUp)
		for _, k := range mc.workers {
			p := k.proc()
			reg, _ := w.registered(k.svc, mc)
			fmt.Fprintf(&b, " %s:%s run %v ok %v reg %v wait %v retry %v rc %v up %v;", k.svc.name, p.version, p.running, p.healthy, reg, k.waiting, k.retry, k.rc != nil, k.up != nil)
		}
		b.WriteString(" ")
	}
	for _, s := range w.svcs {
		fmt.Fprintf(&b, " %s entries %d;", s.name, w.entries(s.name))
	}
	return b.String()
}
