package chaos

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// The checker must catch what it is there to catch: these feed it made-up histories.

func ev(t0 time.Time, ms int, node, svc, kind string, pid int) fixtureEvent {
	return fixtureEvent{Time: t0.Add(time.Duration(ms) * time.Millisecond), Node: node, Service: svc, Version: "v1", Event: kind, Pid: pid, Healthy: true}
}

func TestCheckQuorum(t *testing.T) {
	t0 := time.Now()
	var evs []fixtureEvent
	for i, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
		evs = append(evs, ev(t0, 0, n, "x", "serving", 100+i))
	}
	in := checkInput{Quorum: map[string]int{"x": 3}, Nodes: []string{"n1", "n2", "n3", "n4", "n5"}, From: t0, To: t0.Add(time.Hour)}

	// n1 stops (4 left), comes back; n2 stops: fine.
	in.Events = append(evs, ev(t0, 10, "n1", "x", "stopped", 100), ev(t0, 20, "n1", "x", "serving", 200), ev(t0, 30, "n2", "x", "stopped", 101))
	if r := checkQuorum(in); !r.Pass {
		t.Fatalf("clean history judged bad: %s", r)
	}

	// n5 vanished (SIGKILL), n1 and n2 stop: 2 left of quorum 3.
	in.Events = append(evs, fixtureEvent{Time: t0.Add(5 * time.Millisecond), Node: "n5", Service: "x", Event: "vanished", Pid: 104},
		ev(t0, 10, "n1", "x", "stopped", 100), ev(t0, 30, "n2", "x", "stopped", 101))
	if r := checkQuorum(in); r.Pass || !strings.Contains(r.String(), "n2 x@v1") {
		t.Fatalf("stop below quorum after a crash not caught: %s", r)
	}

	// n4 and n5 serve but the nemesis has them down: n1 stopping leaves 2 counted.
	in.Events = append(evs, ev(t0, 10, "n1", "x", "stopped", 100))
	in.Windows = []window{{Node: "n4", Fault: "freeze", From: t0}, {Node: "n5", Fault: "cut", From: t0, To: t0.Add(time.Second)}}
	if r := checkQuorum(in); r.Pass {
		t.Fatalf("nemesis-downed nodes counted as up: %s", r)
	}
	if d := findDips(in); len(d) != 0 {
		t.Fatalf("dips %+v: by ground truth 4 of 5 serve", d)
	}

	// n1 stops after n2 stopped and n5 was killed: 2 of quorum 3. n1 counted roll call round 7.
	in.Windows = []window{{Node: "n5", Fault: "kill-agent", From: t0.Add(50 * time.Millisecond)}}
	in.Events = append(evs, ev(t0, 20, "n2", "x", "stopped", 101),
		fixtureEvent{Time: t0.Add(50 * time.Millisecond), Node: "n5", Service: "x", Event: "vanished", Pid: 104},
		ev(t0, 100, "n1", "x", "stopped", 100))
	in.Snaps = []snapshot{{Time: t0.Add(90 * time.Millisecond), Service: "x", Kind: "staging",
		Members: map[string]string{"n1": "upgrading v2"}, Rounds: map[string]int32{"n1": 7}}}
	// The round began before the kill: a failure concurrent with the decision, excused.
	in.Rounds = map[string]map[int32]time.Time{"x": {6: t0.Add(10 * time.Millisecond), 7: t0.Add(40 * time.Millisecond)}}
	if r := checkQuorum(in); !r.Pass || !strings.Contains(r.String(), "concurrent with round 7") {
		t.Fatalf("a kill after the round began not excused: %s", r)
	}
	// The round began after the kill (the session-timeout window): caught.
	in.Rounds = map[string]map[int32]time.Time{"x": {7: t0.Add(60 * time.Millisecond)}}
	if r := checkQuorum(in); r.Pass || !strings.Contains(r.String(), "round 7 began") {
		t.Fatalf("a stop counting a node killed before the round not caught: %s", r)
	}
	// The observer missed round 7. An earlier round seen (6, begun before the kill) says
	// nothing of 7's start: judged at the stop's time, caught.
	in.Rounds = map[string]map[int32]time.Time{"x": {6: t0.Add(10 * time.Millisecond)}}
	if r := checkQuorum(in); r.Pass || !strings.Contains(r.String(), "its start not seen") {
		t.Fatalf("missed round judged by an earlier round's start: %s", r)
	}
	// A later round seen (8, begun before the kill) bounds 7's start: excused.
	in.Rounds = map[string]map[int32]time.Time{"x": {6: t0.Add(10 * time.Millisecond), 8: t0.Add(45 * time.Millisecond)}}
	if r := checkQuorum(in); !r.Pass {
		t.Fatalf("missed round bounded by a later round before the kill not excused: %s", r)
	}
	// n1's mark of an earlier step (round 3, long before) was gone before the stop and the
	// stop's mark (round 7, begun after the kill) was seen only after it: round 7 counts.
	in.Snaps = []snapshot{
		{Time: t0.Add(-time.Minute), Service: "x", Kind: "staging", Members: map[string]string{"n1": "upgrading v1"}, Rounds: map[string]int32{"n1": 3}},
		{Time: t0.Add(30 * time.Millisecond), Service: "x", Kind: "staging", Members: map[string]string{"n1": "staged v2"}},
		{Time: t0.Add(110 * time.Millisecond), Service: "x", Kind: "staging", Members: map[string]string{"n1": "upgrading v2"}, Rounds: map[string]int32{"n1": 7}},
	}
	in.Rounds = map[string]map[int32]time.Time{"x": {3: t0.Add(-time.Minute), 7: t0.Add(60 * time.Millisecond)}}
	if r := checkQuorum(in); r.Pass || !strings.Contains(r.String(), "round 7 began") {
		t.Fatalf("a stale mark of an earlier step stood in for the stop's round: %s", r)
	}
	// The observer, lagging, never saw n1's mark (staged before the decision, gone after the
	// upgrade): the latest round that can have begun before the stop stands in. Round 7 began
	// before the kill and none later: excused.
	in.Snaps = []snapshot{
		{Time: t0.Add(30 * time.Millisecond), Service: "x", Kind: "staging", Members: map[string]string{"n1": "staged v2"}},
		{Time: t0.Add(300 * time.Millisecond), Service: "x", Kind: "staging", Members: map[string]string{}},
	}
	in.Rounds = map[string]map[int32]time.Time{"x": {6: t0.Add(10 * time.Millisecond), 7: t0.Add(40 * time.Millisecond), 8: t0.Add(200 * time.Millisecond)}}
	if r := checkQuorum(in); !r.Pass || !strings.Contains(r.String(), "the latest round that can have begun before it (7; its mark not seen)") {
		t.Fatalf("a kill after the latest round before the stop not excused: %s", r)
	}
	// A round begun after the kill and before the stop may be the one n1 counted: caught.
	in.Rounds["x"] = map[int32]time.Time{6: t0.Add(10 * time.Millisecond), 7: t0.Add(40 * time.Millisecond), 8: t0.Add(60 * time.Millisecond), 9: t0.Add(200 * time.Millisecond)}
	if r := checkQuorum(in); r.Pass || !strings.Contains(r.String(), "its mark not seen, so the latest round that can have begun before it: round 8 began") {
		t.Fatalf("a stop that may have counted a round begun after the kill not caught: %s", r)
	}
	// So may a round missed between 7 and 9 (begun by 9's start, 200 ms, past the stop: by
	// the stop itself): caught.
	delete(in.Rounds["x"], 8)
	if r := checkQuorum(in); r.Pass {
		t.Fatalf("a stop that may have counted a missed round begun after the kill not caught: %s", r)
	}

	// No round seen at all: judged at the stop's time.
	in.Snaps, in.Rounds = nil, nil
	if r := checkQuorum(in); r.Pass || !strings.Contains(r.String(), "no roll call round seen") {
		t.Fatalf("stop without a round not judged strictly: %s", r)
	}
}

func TestCheckOrder(t *testing.T) {
	t0 := time.Now()
	snaps := []snapshot{
		{Time: t0.Add(10 * time.Millisecond), Service: "b", Kind: "current", Members: map[string]string{"n1": "v2", "n2": "v2"}},
		{Time: t0.Add(10 * time.Millisecond), Service: "b", Kind: "staging", Members: map[string]string{}},
		{Time: t0.Add(20 * time.Millisecond), Service: "c", Kind: "current", Members: map[string]string{"n1": "v2", "n2": "v1"}},
		{Time: t0.Add(40 * time.Millisecond), Service: "c", Kind: "current", Members: map[string]string{"n1": "v2", "n2": "v2"}},
	}
	step := stepRecord{Index: 1, Previous: map[string]string{"b": "v1", "c": "v1", "d": "v1"},
		Target: map[string]string{"b": "v2", "c": "v2", "d": "v2"}, Start: t0, End: t0.Add(time.Hour)}
	in := checkInput{Quorum: map[string]int{"b": 2, "c": 2, "d": 1}, Deps: map[string][]string{"d": {"b", "c"}},
		Steps: []stepRecord{step}, Snaps: snaps}

	in.Events = []fixtureEvent{ev(t0, 50, "n1", "d", "stopped", 1)}
	if r := checkOrder(in, "d"); !r.Pass {
		t.Fatalf("d after b and c complete judged bad: %s", r)
	}
	in.Events = []fixtureEvent{ev(t0, 30, "n1", "d", "stopped", 1)}
	if r := checkOrder(in, "d"); r.Pass {
		t.Fatalf("d stopping before c is complete not caught: %s", r)
	}
	in.Steps[0].Unhealthy = "b"
	in.Events = []fixtureEvent{ev(t0, 50, "n1", "d", "stopped", 1)}
	if r := checkOrder(in, "d"); r.Pass {
		t.Fatalf("d stopping while b halts not caught: %s", r)
	}
}

// A cut proxy passes nothing either way until healed; what was sent meanwhile arrives then.
func TestZKProxyCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	px, err := newZKProxy("n1", "127.0.0.1", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	c, err := net.Dial("tcp", px.servers)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(msg string, wait time.Duration) (string, error) {
		buf := make([]byte, len(msg))
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_, err := io.ReadFull(c, buf)
		return string(buf), err
	}
	if _, err := c.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if got, err := echo("one", 10*time.Second); err != nil || got != "one" {
		t.Fatalf("echo through the proxy: %q, %v", got, err)
	}
	px.Cut()
	if _, err := c.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	// A negative check needs some wait: nothing may come back while cut.
	if got, err := echo("two", 300*time.Millisecond); err == nil {
		t.Fatalf("got %q through a cut proxy", got)
	}
	px.Heal()
	if got, err := echo("two", 10*time.Second); err != nil || got != "two" {
		t.Fatalf("after the heal: %q, %v", got, err)
	}
}

// A seed draws the same plan every time: a failing run is replayed by its seed.
func TestDrawPlanDeterministic(t *testing.T) {
	for seed := int64(1); seed <= 50; seed++ {
		a, b := drawPlan(seed, true), drawPlan(seed, true)
		if a.String() != b.String() {
			t.Fatalf("seed %d: %s, then %s", seed, a, b)
		}
		if testing.Verbose() && seed <= 40 {
			t.Log(a)
		}
	}
}

func TestCheckAgentCrashes(t *testing.T) {
	t0 := time.Now()
	crash := agentCrash{Node: "n1", At: t0.Add(100 * time.Millisecond), Restarted: t0.Add(200 * time.Millisecond)}
	base := []fixtureEvent{ev(t0, 0, "n1", "x", "serving", 100), ev(t0, 0, "n2", "x", "serving", 101)}
	judge := func(more ...fixtureEvent) result {
		return checkAgentCrashes(checkInput{Crashes: []agentCrash{crash}, Events: append(append([]fixtureEvent(nil), base...), more...)})
	}
	if r := judge(); !r.Pass || !strings.Contains(r.String(), "still serving") {
		t.Fatalf("a service that kept running judged bad: %s", r)
	}
	if r := judge(ev(t0, 300, "n1", "x", "stopped", 100)); !r.Pass {
		t.Fatalf("a voluntary stop by the restarted agent judged bad: %s", r)
	}
	if r := judge(fixtureEvent{Time: t0.Add(150 * time.Millisecond), Node: "n1", Service: "x", Event: "vanished", Pid: 100}); r.Pass {
		t.Fatalf("a host service killed with its agent not caught: %s", r)
	}
	if r := judge(ev(t0, 150, "n1", "x", "stopped", 100)); r.Pass {
		t.Fatalf("a stop while no agent ran not caught: %s", r)
	}
	in := checkInput{Crashes: []agentCrash{crash}, Windows: []window{{Node: "n1", Fault: faultKillAgent, From: t0.Add(250 * time.Millisecond)}},
		Events: append(append([]fixtureEvent(nil), base...), fixtureEvent{Time: t0.Add(260 * time.Millisecond), Node: "n1", Service: "x", Event: "vanished", Pid: 100})}
	if r := checkAgentCrashes(in); !r.Pass {
		t.Fatalf("a later machine crash blamed on the agent crash: %s", r)
	}
	// Last seen alive just before the machine crash began, found gone after it (seed 30).
	in.Events[len(in.Events)-1].Time = t0.Add(240 * time.Millisecond)
	in.Events[len(in.Events)-1].Detected = t0.Add(290 * time.Millisecond)
	if r := checkAgentCrashes(in); !r.Pass {
		t.Fatalf("a process last seen just before a machine crash blamed on the agent crash: %s", r)
	}
	in.Events[len(in.Events)-1].Detected = t0.Add(245 * time.Millisecond)
	if r := checkAgentCrashes(in); r.Pass {
		t.Fatalf("a process gone before the machine crash began not caught: %s", r)
	}
}

// A failure stops the deploy queue: the failed service and every service after it in the
// deploy order (a, b, c, d) stay on the previous version, dependent or not.
func TestExpectedAfterHalt(t *testing.T) {
	step := stepRecord{Previous: map[string]string{"a": "v2", "b": "v2", "c": "v2", "d": "v2"},
		Target: map[string]string{"a": "v3", "b": "v3", "c": "v3", "d": "v3"}}
	for unhealthy, want := range map[string]string{
		"":  "map[a:v3 b:v3 c:v3 d:v3]",
		"a": "map[a:v2 b:v2 c:v2 d:v2]",
		"b": "map[a:v3 b:v2 c:v2 d:v2]",
		"c": "map[a:v3 b:v3 c:v2 d:v2]",
	} {
		step.Unhealthy = unhealthy
		if got := fmt.Sprint(expected(step)); got != want {
			t.Errorf("unhealthy %q: expected %s, want %s", unhealthy, got, want)
		}
	}
}

func TestCheckGates(t *testing.T) {
	t0 := time.Now()
	nodes := []string{"n1", "n2", "n3", "n4"}
	var evs []fixtureEvent
	for i, n := range nodes {
		evs = append(evs, ev(t0, 0, n, "x", "serving", 100+i))
	}
	in := checkInput{Nodes: nodes, From: t0, To: t0.Add(time.Hour), MaxUnavailable: map[string]int{"x": 2},
		Zone: map[string]string{"n1": "a", "n2": "a", "n3": "b", "n4": "b"}}

	// Two upgrading at once, then a third after one came back: fine.
	in.Events = append(evs, ev(t0, 10, "n1", "x", "stopped", 100), ev(t0, 20, "n2", "x", "stopped", 101),
		ev(t0, 30, "n1", "x", "serving", 200), ev(t0, 40, "n3", "x", "stopped", 102))
	if r := checkGates(in); !r.Pass {
		t.Fatalf("clean history judged bad: %s", r)
	}
	// A third while two are still upgrading: caught.
	in.Events = append(evs, ev(t0, 10, "n1", "x", "stopped", 100), ev(t0, 20, "n2", "x", "stopped", 101), ev(t0, 40, "n3", "x", "stopped", 102))
	if r := checkGates(in); r.Pass || !strings.Contains(r.String(), "maxUnavailable 2") {
		t.Fatalf("three upgrading not caught: %s", r)
	}
	// ...unless the nemesis took one of them down meanwhile (its session, and mark, may be gone).
	in.Windows = []window{{Node: "n1", Fault: "kill-agent", From: t0.Add(15 * time.Millisecond)}}
	if r := checkGates(in); !r.Pass {
		t.Fatalf("a nemesis-downed upgrade counted: %s", r)
	}

	// Zones: n3 (b) stops while n1 (a) upgrades: caught; n2 (a) with n1: fine up to 2.
	in = checkInput{Nodes: nodes, From: t0, To: t0.Add(time.Hour), PerZone: map[string]int{"x": 2}, Zone: in.Zone}
	in.Events = append(evs, ev(t0, 10, "n1", "x", "stopped", 100), ev(t0, 20, "n2", "x", "stopped", 101))
	if r := checkGates(in); !r.Pass {
		t.Fatalf("two of one zone judged bad: %s", r)
	}
	in.Events = append(evs, ev(t0, 10, "n1", "x", "stopped", 100), ev(t0, 20, "n3", "x", "stopped", 102))
	if r := checkGates(in); r.Pass || !strings.Contains(r.String(), "another zone") {
		t.Fatalf("two zones at once not caught: %s", r)
	}
	in.PerZone["x"] = 1
	in.Events = append(evs, ev(t0, 10, "n1", "x", "stopped", 100), ev(t0, 20, "n2", "x", "stopped", 101))
	if r := checkGates(in); r.Pass || !strings.Contains(r.String(), "per-zone limit 1") {
		t.Fatalf("two of one zone over its limit not caught: %s", r)
	}
}
