package rollout

import (
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func mustTime(t *testing.T, s, tz string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWindows(t *testing.T) {
	paris := zklayout.Window{Start: "02:00", End: "05:00", TimeZone: "Europe/Paris"}
	night := zklayout.Window{Days: []string{"Sat"}, Start: "22:00", End: "02:00", TimeZone: "UTC"}
	for _, tc := range []struct {
		name string
		ws   []zklayout.Window
		now  time.Time
		open bool
		msg  string
		next time.Time
	}{
		{"no windows: always open", nil, mustTime(t, "2026-12-05 12:00", "UTC"), true, "", time.Time{}},
		{"inside", []zklayout.Window{paris}, mustTime(t, "2026-12-05 03:00", "Europe/Paris"), true, "", time.Time{}},
		{"start is inside", []zklayout.Window{paris}, mustTime(t, "2026-12-05 02:00", "Europe/Paris"), true, "", time.Time{}},
		{"end is outside", []zklayout.Window{paris}, mustTime(t, "2026-12-05 05:00", "Europe/Paris"), false,
			"window opens at 02:00 Europe/Paris", mustTime(t, "2026-12-06 02:00", "Europe/Paris")},
		{"before, same day, other zone", []zklayout.Window{paris}, mustTime(t, "2026-12-05 00:30", "UTC"), false,
			"window opens at 02:00 Europe/Paris", mustTime(t, "2026-12-05 02:00", "Europe/Paris")},
		{"across midnight, after it", []zklayout.Window{night}, mustTime(t, "2026-12-06 01:00", "UTC"), true, "", time.Time{}},
		{"across midnight, day not listed", []zklayout.Window{night}, mustTime(t, "2026-12-06 23:00", "UTC"), false,
			"window opens at Sat 22:00 UTC", mustTime(t, "2026-12-12 22:00", "UTC")},
		{"the earliest of two", []zklayout.Window{night, paris}, mustTime(t, "2026-12-05 12:00", "UTC"), false,
			"window opens at 22:00 UTC", mustTime(t, "2026-12-05 22:00", "UTC")},
		// 2026-03-29: Paris moves from 02:00 to 03:00; the window opens at the first instant
		// that exists.
		{"daylight saving", []zklayout.Window{paris}, mustTime(t, "2026-03-29 01:30", "Europe/Paris"), false,
			"window opens at 03:00 Europe/Paris", mustTime(t, "2026-03-29 03:00", "Europe/Paris")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &zklayout.Plan{Windows: tc.ws}
			msg, at := Window(p, tc.now)
			if (msg == "") != tc.open || msg != tc.msg {
				t.Errorf("Window = %q, want %q (open %v)", msg, tc.msg, tc.open)
			}
			if !at.Equal(tc.next) {
				t.Errorf("opens at %v, want %v", at, tc.next)
			}
		})
	}
}

func TestGates(t *testing.T) {
	topo := func(per int, quorums ...zklayout.DomainQuorum) *zklayout.Topology {
		return &zklayout.Topology{Key: "zone", MaxUnavailablePerDomain: per, Domains: quorums}
	}
	online := map[string]string{"a1": "zone-a", "a2": "zone-a", "b1": "zone-b", "b2": "zone-b", "b3": "zone-b"}
	for _, tc := range []struct {
		name     string
		plan     zklayout.Plan
		in       GateInput
		wait     string
		gate     string
		requeue  bool
		others   int
		allowed  int
		floorMin int
	}{
		{name: "no gates", others: -1, allowed: -1},
		{name: "maxUnavailable: room for one more", plan: zklayout.Plan{MaxUnavailable: 3},
			in: GateInput{InFlight: []Flight{{Node: "x"}}}, others: 1, allowed: 3},
		{name: "maxUnavailable reached", plan: zklayout.Plan{MaxUnavailable: 2},
			in:   GateInput{InFlight: []Flight{{Node: "x"}, {Node: "y"}}},
			wait: "2 node(s) upgrading, maxUnavailable 2", gate: GateMaxUnavailable},
		{name: "another domain in flight", plan: zklayout.Plan{Topology: topo(2)},
			in:   GateInput{Domain: "zone-b", InFlight: []Flight{{Node: "a1", Domain: "zone-a"}}},
			wait: "zone-a has 1 node(s) down; one domain at a time", gate: GateDomain},
		{name: "an earlier domain queued behind: requeue", plan: zklayout.Plan{Topology: topo(1)},
			in:   GateInput{Domain: "zone-b", Queued: []Flight{{Node: "b2", Domain: "zone-b"}, {Node: "a1", Domain: "zone-a"}}},
			wait: "zone-a goes before zone-b", gate: GateDomain, requeue: true},
		{name: "an earlier domain queued, own domain begun: finish it", plan: zklayout.Plan{Topology: topo(2)},
			in:     GateInput{Domain: "zone-b", InFlight: []Flight{{Node: "b1", Domain: "zone-b"}}, Queued: []Flight{{Node: "a1", Domain: "zone-a"}}},
			others: 0, allowed: 2},
		{name: "domain full", plan: zklayout.Plan{Topology: topo(1)},
			in:   GateInput{Domain: "zone-b", InFlight: []Flight{{Node: "b1", Domain: "zone-b"}}},
			wait: "zone-b has 1 node(s) down, maxUnavailablePerDomain 1", gate: GateDomain},
		{name: "the tighter cap wins", plan: zklayout.Plan{MaxUnavailable: 5, Topology: topo(2)},
			in: GateInput{Domain: "zone-b"}, others: 1, allowed: 2},
		{name: "domain quorum holds: a floor for the roll call", plan: zklayout.Plan{Topology: topo(3, zklayout.DomainQuorum{Name: "zone-b", MinAvailable: 2})},
			in: GateInput{Domain: "zone-b", Online: online}, others: 2, allowed: 3, floorMin: 2},
		{name: "domain quorum would break", plan: zklayout.Plan{Topology: topo(3, zklayout.DomainQuorum{Name: "zone-a", MinAvailable: 2})},
			in:   GateInput{Domain: "zone-a", Online: online},
			wait: "zone-a has 2 node(s) online, minAvailablePerDomain 2", gate: GateDomainQuorum},
		{name: "nodes without the label are a domain of their own", plan: zklayout.Plan{Topology: topo(1)},
			in:   GateInput{Domain: "zone-a", InFlight: []Flight{{Node: "x"}}},
			wait: "the nodes without label zone has 1 node(s) down; one domain at a time", gate: GateDomain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Plan = &tc.plan
			r := Gates(in)
			if r.Wait != tc.wait || r.Gate != tc.gate || r.Requeue != tc.requeue {
				t.Fatalf("Gates = %q (gate %q, requeue %v), want %q (gate %q, requeue %v)", r.Wait, r.Gate, r.Requeue, tc.wait, tc.gate, tc.requeue)
			}
			if tc.wait != "" {
				return
			}
			if r.Others != tc.others || r.Allowed != tc.allowed {
				t.Errorf("others %d allowed %d, want %d and %d", r.Others, r.Allowed, tc.others, tc.allowed)
			}
			if (r.Floor != nil) != (tc.floorMin > 0) || (r.Floor != nil && (r.Floor.Min != tc.floorMin || len(r.Floor.Of) != 3)) {
				t.Errorf("floor %+v, want min %d over zone-b's 3 online nodes", r.Floor, tc.floorMin)
			}
		})
	}
}

func TestAdmissibleFloors(t *testing.T) {
	batch := []Admitted{{Node: "b1"}, {Node: "b2"}, {Node: "b3"}}
	answered := map[string]bool{"a1": true, "a2": true, "b2": true, "b3": true, "b4": true}
	zoneB := Floor{Name: "zone-b", Min: 2, Of: map[string]bool{"b1": true, "b2": true, "b3": true, "b4": true}}
	// The quorum alone (3 of the 5 others) lets b1 and b2 go; zone-b's floor of 2 lets b1 and
	// b2 go (b3, b4 stay)... and b3 would leave b4 alone.
	if k := AdmissibleFloors(batch, answered, 3, nil); k != 3 {
		t.Errorf("quorum alone: %d, want 3", k)
	}
	if k := AdmissibleFloors(batch, answered, 3, []Floor{zoneB}); k != 2 {
		t.Errorf("with zone-b's floor: %d, want 2", k)
	}
	zoneB.Min = 4
	if k := AdmissibleFloors(batch, answered, 0, []Floor{zoneB}); k != 0 {
		t.Errorf("zone-b's floor above what answered: %d, want 0", k)
	}
}

// Next with gates: the first waiter of base() (n1, then n2 and n3 queued, all online).
func TestNextGates(t *testing.T) {
	zones := func(s *Snapshot, l *Local, z1, z2, z3 string) {
		s.Plan.Topology = &zklayout.Topology{Key: "zone", MaxUnavailablePerDomain: 2}
		s.Plan.MinAvailable = 0
		for i, z := range []string{z1, z2, z3} {
			s.Queue[i].Staged.Domain = z
			s.Current[i].Labels = map[string]string{"role": "web", "zone": z}
		}
		l.Labels = s.Current[0].Labels
		s.Own = ptr(s.Current[0])
	}
	decide := Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
		Online: 3, Prewarm: "v2", Registered: true}
	closed := mustTime(t, "2026-12-05 12:00", "UTC")
	runNext(t, []nextCase{
		{name: "window closed: wait for it, watching the plan", mod: func(s *Snapshot, l *Local) {
			s.Plan.Windows = []zklayout.Window{{Start: "02:00", End: "04:00", TimeZone: "Europe/Paris"}}
			l.Now = closed
		}, want: Step{Kind: StepWait, Gate: GateWindow, RetryAt: mustTime(t, "2026-12-06 02:00", "Europe/Paris"), Prewarm: "v2", Registered: true},
			reason: "window opens at 02:00 Europe/Paris", watch: []string{planW}},
		{name: "maxUnavailable 1: the decider alone", mod: func(s *Snapshot, l *Local) {
			s.Plan.MinAvailable, s.Plan.MaxUnavailable = 0, 1
		}, want: decide, admit: []string{"n1"}},
		{name: "a canary that promotes itself: one goes, and checks its health through the bake", mod: func(s *Snapshot, l *Local) {
			s.Plan.MinAvailable, s.Plan.Canary, s.Plan.CanaryBakeSeconds = 0, 1, 60
		}, want: withBake(decide, time.Minute), admit: []string{"n1"}},
		{name: "maxUnavailable 2 with one in flight: wait", mod: func(s *Snapshot, l *Local) {
			s.Plan.MinAvailable, s.Plan.MaxUnavailable = 0, 2
			s.Queue = append([]QueueEntry{qe(child("n4", 0), 0x104, "v2", upgrading), qe(child("n5", 0), 0x105, "v2", upgrading)}, s.Queue...)
		}, want: Step{Kind: StepWait, Gate: GateMaxUnavailable, Prewarm: "v2", Registered: true},
			reason: "2 node(s) upgrading, maxUnavailable 2", watch: []string{planW, queueW, currentW}},
		{name: "a batch stays in its domain", mod: func(s *Snapshot, l *Local) {
			zones(s, l, "zone-a", "zone-a", "zone-b")
		}, want: withFloors(decide, nil), admit: []string{"n1", "n2"}},
		{name: "an earlier domain behind: requeue", mod: func(s *Snapshot, l *Local) {
			zones(s, l, "zone-b", "zone-b", "zone-a")
		}, want: Step{Kind: StepLeave, Gate: GateDomain, Remove: []string{c1}, Prewarm: "v2", Registered: true},
			reason: "zone-a goes before zone-b"},
		{name: "staged without a domain: stage again", mod: func(s *Snapshot, l *Local) {
			zones(s, l, "zone-a", "zone-a", "zone-b")
			s.Queue[0].Staged.Domain = ""
		}, want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true, Domain: "zone-a"}},
		{name: "domain quorum: a floor for the roll call", mod: func(s *Snapshot, l *Local) {
			zones(s, l, "zone-a", "zone-a", "zone-a")
			s.Plan.Topology.Domains = []zklayout.DomainQuorum{{Name: "zone-a", MinAvailable: 1}}
		}, want: withFloors(decide, []Floor{{Name: "zone-a", Min: 1, Of: map[string]bool{"n1": true, "n2": true, "n3": true}}}), admit: []string{"n1", "n2"}},
	})
}

func withFloors(st Step, f []Floor) Step { st.Floors = f; return st }

func withBake(st Step, d time.Duration) Step { st.Bake = d; return st }

func TestCanaryGate(t *testing.T) {
	now := mustTime(t, "2026-12-05 12:00", "UTC")
	plan := func(canary, bake int, promoted bool) *zklayout.Plan {
		return &zklayout.Plan{Deploy: "web", Version: "v2", Canary: canary, CanaryBakeSeconds: bake, Promoted: promoted}
	}
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	for _, tc := range []struct {
		name    string
		in      GateInput
		wait    string
		retry   time.Time
		others  int
		allowed int
	}{
		{name: "no canary on v2 yet: the batch is capped to the canaries",
			in: GateInput{Plan: plan(3, 0, false)}, others: 2, allowed: 3},
		{name: "one in flight, one on v2: one more",
			in: GateInput{Plan: plan(3, 0, false), InFlight: []Flight{{Node: "x"}}, OnTarget: map[string]time.Time{"y": ago(time.Minute)}}, others: 0, allowed: 3},
		{name: "canaries done: wait for the promotion",
			in:   GateInput{Plan: plan(2, 0, false), OnTarget: map[string]time.Time{"x": ago(time.Hour), "y": ago(time.Hour)}},
			wait: "canary: 2 node(s) on v2; waiting for kubectl rollkeeper promote web"},
		{name: "promoted: no canary gate",
			in: GateInput{Plan: plan(2, 0, true), OnTarget: map[string]time.Time{"x": ago(time.Hour), "y": ago(time.Hour)}}, others: -1, allowed: -1},
		{name: "a rollback has no canary phase",
			in: GateInput{Plan: plan(2, 0, false), Target: "v1"}, others: -1, allowed: -1},
		{name: "bake: a canary still in flight",
			in:   GateInput{Plan: plan(2, 60, false), InFlight: []Flight{{Node: "x"}}, OnTarget: map[string]time.Time{"y": ago(time.Hour)}},
			wait: "canary: 1 of 2 canaries back on v2"},
		{name: "bake: not long enough yet",
			in:   GateInput{Plan: plan(2, 60, false), OnTarget: map[string]time.Time{"x": ago(time.Hour), "y": ago(20 * time.Second)}},
			wait: "canary: 2 node(s) on v2, promoted at 12:00:40 UTC if they stay healthy", retry: now.Add(40 * time.Second)},
		{name: "bake: done, the first canaries count (later nodes do not hold it again)",
			in:     GateInput{Plan: plan(2, 60, false), OnTarget: map[string]time.Time{"x": ago(time.Hour), "y": ago(2 * time.Minute), "z": ago(time.Second)}},
			others: -1, allowed: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Now = now
			if in.Target == "" {
				in.Target = "v2"
			}
			r := Gates(in)
			if r.Wait != tc.wait || !r.RetryAt.Equal(tc.retry) {
				t.Fatalf("Gates = %q (retry %v), want %q (retry %v)", r.Wait, r.RetryAt, tc.wait, tc.retry)
			}
			if tc.wait != "" {
				if r.Gate != GateCanary {
					t.Errorf("gate %q", r.Gate)
				}
				return
			}
			if r.Gate != "" || r.Others != tc.others || r.Allowed != tc.allowed {
				t.Errorf("gate %q others %d allowed %d, want others %d allowed %d", r.Gate, r.Others, r.Allowed, tc.others, tc.allowed)
			}
		})
	}
}

// maxFailures: a node whose upgrade failed keeps its version and leaves the queue; the others
// go on while the failures stay within maxFailures; one more halts.
func TestNextMaxFailures(t *testing.T) {
	fail := func(node string) zklayout.Failure {
		return zklayout.Failure{Node: node, Version: "v2", Kind: zklayout.FailureHealthCheck, Reason: "exit 1"}
	}
	decide := Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
		Online: 3, Prewarm: "v2", Registered: true}
	runNext(t, []nextCase{
		{name: "another node's failure, tolerated: go on", mod: func(s *Snapshot, l *Local) {
			s.Plan.MaxFailures = 1
			s.Failures = []zklayout.Failure{fail("n3")}
		}, want: decide, admit: []string{"n1", "n2"}},
		{name: "own failure, tolerated: keep the version, leave the queue", mod: func(s *Snapshot, l *Local) {
			s.Plan.MaxFailures = 1
			s.Failures = []zklayout.Failure{fail("n1")}
		}, want: Step{Kind: StepLeave, Remove: []string{c1}, Registered: true}, reason: "up to date"},
		{name: "one more than maxFailures: halted", mod: func(s *Snapshot, l *Local) {
			s.Plan.MaxFailures = 1
			s.Failures = []zklayout.Failure{fail("n2"), fail("n3")}
		}, want: Step{Kind: StepLeave, Remove: []string{c1}, Registered: true}, reason: "up to date"},
	})
	plan := &zklayout.Plan{Version: "v2", PreviousVersion: "v1", MaxFailures: 1, FailurePolicy: zklayout.FailurePolicyRollback}
	if tg, halted := Target(plan, []zklayout.Failure{fail("n1")}); tg != "v2" || halted {
		t.Fatalf("one failure of maxFailures 1: %s %v", tg, halted)
	}
	if tg, halted := Target(plan, []zklayout.Failure{fail("n1"), fail("n2")}); tg != "v1" || halted {
		t.Fatalf("two failures, Rollback: %s %v, want a rollback to v1", tg, halted)
	}
}
