package sim

import (
	"fmt"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// checkStop checks invariants 1-3, 6 and 7 at a voluntary stop: k's decision committed and its process
// is about to stop for the upgrade to st.Version.
func (w *world) checkStop(k *worker, rc *rollCall, st rollout.Step) {
	s := k.svc
	// (1) Quorum, by ground truth: the other machines whose process runs healthy and is
	// registered. A machine that went down (crash, session end) after the roll call's round
	// began still counts: a failure concurrent with the decision is the window the design
	// accepts (docs/design.md, the quorum argument, 5).
	serving, servingDomain := 0, 0
	domain := rollout.DomainOf(&s.plan, k.mc.labels)
	var down []string
	for _, mc := range w.machines {
		if mc == k.mc {
			continue
		}
		p := mc.procs[s.idx]
		reg, _ := w.registered(s, mc)
		switch {
		case p.running && p.healthy && reg, p.lastFault > rc.startTick:
			serving++
			if rollout.DomainOf(&s.plan, mc.labels) == domain {
				servingDomain++
			}
		default:
			down = append(down, mc.name)
		}
	}
	if serving < s.min {
		w.fail("invariant 1 (quorum): %s stops %s for %s with %d other machines serving, minAvailable %d (not serving: %v)",
			k.mc.name, s.name, st.Version, serving, s.min, down)
	}
	if m := s.plan.Topology.MinAvailableIn(domain); servingDomain < m {
		w.fail("invariant 6 (domain quorum): %s stops %s for %s with %d other machines of %s serving, minAvailablePerDomain %d",
			k.mc.name, s.name, st.Version, servingDomain, domain, m)
	}
	// (6) The gates beyond the quorum, by ground truth: the other machines whose agent is
	// upgrading the service (stopped it for an upgrade, not started it yet) in a live session.
	// An upgrade whose session ended is a failure, like a crash: its mark went with the
	// session and nobody counts it (docs/design.md, gates).
	w.checkGates(k, st)
	// (7) The canary phase.
	w.checkCanary(k, rc, st)
	// (2) Dependency order: every service s depends on completed first.
	if d := w.depIncomplete(s); d != "" {
		w.fail("invariant 2 (order): %s stops %s before %s's rollout completed", k.mc.name, s.name, d)
	}
	// (3) No stop for a plan version after a health failure of it was recorded.
	failed := w.failedNodes(s)
	if st.Version == s.plan.Version && len(failed) > s.plan.MaxFailures {
		w.fail("invariant 3 (failure): %s stops %s for %s after %d health failure(s) of %s were recorded, maxFailures %d",
			k.mc.name, s.name, st.Version, len(failed), st.Version, s.plan.MaxFailures)
	}
	if st.Version == s.plan.Version && failed[k.mc.name] {
		w.fail("invariant 3 (failure): %s stops %s for %s again after its own upgrade to it failed", k.mc.name, s.name, st.Version)
	}
}

// healthFailure reports whether s's rollout halted: failures/<svc> holds more HealthCheck
// records of the plan's version than its maxFailures tolerates.
func (w *world) healthFailure(s *service) bool {
	return len(w.failedNodes(s)) > s.plan.MaxFailures
}

// failedNodes are the machines whose HealthCheck failure of the plan's version is recorded.
func (w *world) failedNodes(s *service) map[string]bool {
	out := map[string]bool{}
	names, _, err := w.m.Children(w.obs, w.l.FailureService(s.name))
	if err != nil {
		return out
	}
	for _, n := range names {
		data, _, err := w.m.Get(w.obs, w.l.Failure(s.name, n))
		var f zklayout.Failure
		if err == nil && zklayout.Decode(data, &f) == nil && f.Kind == zklayout.FailureHealthCheck && f.Version == s.plan.Version {
			out[f.Node] = true
		}
	}
	return out
}

// checkCompletion notes an agent's removal of a deploy entry of s: s completed once its last
// entry is gone (its truth was checked when the agent decided it, truthfulCompletion).
func (w *world) checkCompletion(s *service) {
	if d := w.depIncomplete(s); d != "" {
		w.find("complete-ahead-of-order", "%s's deploy entry removed while %s, which it depends on, has not completed", s.name, d)
	}
	if w.entries(s.name) == 0 && !s.completed {
		s.completed = true
		w.logf("service %s completed", s.name)
	}
}

// truthfulCompletion checks that s's rollout is complete by ground truth when who (an agent
// deciding to remove its entry, or the operator queueing a catch-up behind it) judged it so:
// no registered machine runs another version, none is mid-upgrade in a live session (one
// whose session ended is unreachable, which completion ignores), and at least
// max(1, minAvailable) registered machines serve the plan's version.
func (w *world) truthfulCompletion(s *service, who string) {
	ok := 0
	tolerated := w.failedNodes(s)
	for _, mc := range w.machines {
		p := mc.procs[s.idx]
		if mc.agentUp && mc.workers[s.idx].up != nil && w.m.Alive(mc.session) {
			w.fail("completion of %s (by the %s) while %s is mid-upgrade", s.name, who, mc.name)
		}
		reg, owner := w.registered(s, mc)
		if !reg {
			continue
		}
		if mc.up && owner == mc.session {
			// The machine's live agent's registration: its process is the truth.
			if p.running && p.version != s.plan.Version && !tolerated[mc.name] {
				w.fail("completion of %s (by the %s) while %s runs %s and is registered", s.name, who, mc.name, p.version)
			}
			if p.running && p.healthy && (p.version == s.plan.Version || tolerated[mc.name]) {
				ok++
			}
			continue
		}
		// A registration left by a crashed agent or machine outlives it until its session
		// expires (the session-timeout window; only a stop needs the roll call to close it):
		// it counts as the protocol counts it, by what it says, unless the process it stands
		// for still runs another version (an agent crash leaves the process running).
		data, _, err := w.m.Get(w.obs, w.l.CurrentNode(s.name, mc.name))
		var c zklayout.Current
		if err != nil || zklayout.Decode(data, &c) != nil {
			continue
		}
		if !tolerated[mc.name] && (c.Version != s.plan.Version || (p.running && p.version != s.plan.Version)) {
			w.fail("completion of %s (by the %s) while %s's lingering registration says %s (process %s, running %v)", s.name, who, mc.name, c.Version, p.version, p.running)
		}
		ok++
	}
	if need := max(1, s.min); ok < need {
		w.fail("completion of %s (by the %s) with %d machines serving %s, need %d", s.name, who, ok, s.plan.Version, need)
	}
}

// converged is invariant 4, checked once the faults are spent, every machine is back and
// nothing but timers can happen: "" when the world is where the protocol must bring it,
// otherwise why not. Per service:
//   - no deploy entry left (it completed; a machine that fell behind would have been requeued
//     by the operator): every machine runs v2 and nobody is staged;
//   - halted by a HealthCheck failure of v2: its entry is still queued; heading the queue with
//     the Rollback policy, every machine is back on v1 and nobody is staged;
//   - otherwise its entry waits behind a halted service heading the queue, and its machines
//     run v1 or v2 (nodes may sit staged). When every service it depends on had completed, it
//     waits behind a service it does not depend on: a finding (requeued-behind-halted).
//
// And every process runs healthy, registered by its agent's live session with the version it
// runs.
func (w *world) converged() string {
	names, _, _ := w.m.Children(w.obs, w.l.Deploy())
	seqs, _ := zklayout.SortSeq(names)
	head := ""
	if len(seqs) > 0 {
		head = seqs[0].Name
	}
	halted := map[string]bool{}
	for _, s := range w.svcs {
		halted[s.name] = w.healthFailure(s)
	}
	for _, s := range w.svcs {
		entries := w.entries(s.name)
		queue, _, _ := w.m.Children(w.obs, w.l.StagingService(s.name))
		want := ""
		switch {
		case entries == 0 && halted[s.name]:
			return fmt.Sprintf("%s: halted, yet its deploy entry is gone", s.name)
		case entries == 0:
			want = v2
			if len(queue) > 0 {
				return fmt.Sprintf("%s: complete, yet staging children %v are left", s.name, queue)
			}
		case halted[s.name]:
			if head == s.name && s.policy == zklayout.FailurePolicyRollback {
				want = v1
				if len(queue) > 0 {
					return fmt.Sprintf("%s: rolled back, yet staging children %v are left", s.name, queue)
				}
			}
		default:
			if head == s.name || !halted[head] {
				return fmt.Sprintf("%s: %d deploy entries left, the queue's head %q is not halted", s.name, entries, head)
			}
			if w.depIncomplete(s) == "" && !w.dependsOn(s, head) && w.behind == "" {
				w.behind = fmt.Sprintf("%s waits for good behind %s, which it does not depend on (the service it depends on completed)", s.name, head)
			}
		}
		for _, mc := range w.machines {
			p := mc.procs[s.idx]
			if !p.running || !p.healthy {
				return fmt.Sprintf("%s/%s: not running healthy (%s)", mc.name, s.name, p.version)
			}
			if want != "" && p.version != want && !(want == v2 && w.failedNodes(s)[mc.name]) {
				return fmt.Sprintf("%s/%s: runs %s, want %s", mc.name, s.name, p.version, want)
			}
			data, st, err := w.m.Get(w.obs, w.l.CurrentNode(s.name, mc.name))
			var c zklayout.Current
			if err != nil || zklayout.Decode(data, &c) != nil || c.Version != p.version || st.EphemeralOwner != mc.session {
				return fmt.Sprintf("%s/%s: not registered on %s by session %d", mc.name, s.name, p.version, mc.session)
			}
		}
	}
	return ""
}

// checkGates checks maxUnavailable and the topology's rules at k's voluntary stop.
func (w *world) checkGates(k *worker, st rollout.Step) {
	s := k.svc
	plan := s.plan
	if plan.MaxUnavailable == 0 && plan.Topology == nil {
		return
	}
	var upgrading []*machine
	for _, mc := range w.machines {
		if mc == k.mc || !mc.agentUp || !w.m.Alive(mc.session) {
			continue
		}
		if o := mc.workers[s.idx]; o != nil && o.up != nil {
			upgrading = append(upgrading, mc)
		}
	}
	if plan.MaxUnavailable > 0 && len(upgrading)+1 > plan.MaxUnavailable {
		w.fail("invariant 6 (maxUnavailable): %s stops %s for %s while %d other node(s) upgrade it, maxUnavailable %d",
			k.mc.name, s.name, st.Version, len(upgrading), plan.MaxUnavailable)
	}
	t := plan.Topology
	if t == nil {
		return
	}
	mine := k.mc.labels[t.Key]
	n := 0
	for _, mc := range upgrading {
		if d := mc.labels[t.Key]; d != mine {
			w.fail("invariant 6 (domains): %s (%s) stops %s while %s (%s) upgrades it: two domains at once", k.mc.name, mine, s.name, mc.name, d)
		}
		n++
	}
	if n+1 > t.MaxUnavailablePerDomain {
		w.fail("invariant 6 (domains): %s stops %s with %d other node(s) of %s upgrading, maxUnavailablePerDomain %d",
			k.mc.name, s.name, n, mine, t.MaxUnavailablePerDomain)
	}
}

// checkCanary checks the canary phase at k's voluntary stop for the plan's version, by ground
// truth: while fewer than Canary other machines run the version or upgrade to it in a live
// session, any stop may go (it is one of the canaries); beyond that, the phase must be over:
// Canary machines served the version healthy for the bake time (the protocol judges from
// their registrations, which come after the start: later, so stricter). A machine whose process or session went down after the decider's round began
// is given the benefit of the doubt: it may have counted as a baked canary when the decider
// read, and a machine back on the version since may have been unseen (a crashed canary is
// replaced: the documented exception to "at most Canary").
func (w *world) checkCanary(k *worker, rc *rollCall, st rollout.Step) {
	s, p := k.svc, k.svc.plan
	if p.Canary == 0 || p.Promoted || st.Version != p.Version {
		return
	}
	on, baked, excused := 0, 0, 0
	for _, mc := range w.machines {
		if mc == k.mc {
			continue
		}
		pr := mc.procs[s.idx]
		if pr.lastFault > rc.startTick {
			excused++
			continue
		}
		live := mc.agentUp && w.m.Alive(mc.session)
		o := mc.workers[s.idx]
		upgrading := live && o != nil && o.up != nil && o.up.to == p.Version
		reg, owner := w.registered(s, mc)
		serving := live && reg && owner == mc.session && pr.running && pr.healthy && pr.version == p.Version
		switch {
		case upgrading:
			on++
		case serving:
			on++
			if w.tick-pr.servedAt >= p.CanaryBakeSeconds {
				baked++
			}
		}
	}
	if on+1 <= p.Canary {
		return // a canary
	}
	if p.CanaryBakeSeconds == 0 || baked+excused < p.Canary {
		w.fail("invariant 7 (canary): %s stops %s for %s with %d other machine(s) on it or upgrading (%d served it %d ticks, %d excused by a fault), canary %d",
			k.mc.name, s.name, st.Version, on, baked, p.CanaryBakeSeconds, excused, p.Canary)
	}
}
