package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// zoneOf puts nodes 1-3 in zone-a and 4-6 in zone-b.
func zoneOf(i int) string {
	if i <= 3 {
		return "zone-a"
	}
	return "zone-b"
}

func strategy(st rkv1alpha1.StrategySpec) harness.ServiceOption {
	return harness.Mutate(func(s *rkv1alpha1.ServiceSpec) { s.Strategy = &st })
}

// downSets returns, for each current/ snapshot the independent watcher saw since since, the
// selected nodes that were not online in it (sorted), and how many intermediate states the
// snapshots skipped in all.
func downSets(s *harness.Stack, svc string, since time.Time) (sets [][]string, at []time.Time, missed int32) {
	for _, snap := range s.Recorder.Snapshots(svc, harness.KindCurrent) {
		if snap.Time.Before(since) {
			continue
		}
		var down []string
		for _, n := range s.Nodes {
			if _, ok := snap.Members[n.Name]; !ok {
				down = append(down, n.Name)
			}
		}
		sort.Strings(down)
		sets, at, missed = append(sets, down), append(at, snap.Time), missed+snap.Missed
	}
	return sets, at, missed
}

// Gates beyond the quorum, seen by the independent watcher: service a with maxUnavailable 2
// (the quorum alone would let 5 of 6 go) never has more than 2 nodes down; service b, by zone
// with 2 nodes per zone at a time, never has nodes of two zones down at once, and finishes
// zone-a before zone-b's first node goes down.
func TestGatesMaxUnavailableAndZones(t *testing.T) {
	const n = 6
	s, ctx := start(t, harness.Config{Nodes: n, RecordServices: []string{"a", "b"},
		NodeLabels: func(i int) map[string]string { return map[string]string{"topology.kubernetes.io/zone": zoneOf(i)} }})
	two := intstr.FromInt32(2)
	maxTwo := strategy(rkv1alpha1.StrategySpec{MaxUnavailable: &two})
	byZone := strategy(rkv1alpha1.StrategySpec{Topology: &rkv1alpha1.TopologySpec{Key: "topology.kubernetes.io/zone", MaxUnavailablePerDomain: 2}})
	deployV1(t, s, ctx, "gates",
		service(t, s, "a", "v1", harness.MinAvailable(1), maxTwo),
		service(t, s, "b", "v1", harness.MinAvailable(1), byZone, harness.DependsOn("a")))
	// Ready needs only the quorum on v1, and a node serves before it registers: from here on,
	// a node missing from current/ is down, so wait until the watcher saw every one register.
	for _, svc := range []string{"a", "b"} {
		must(t, s.Recorder.WaitOnline(ctx, svc, time.Minute, "watcher sees every node on v1", func(m map[string]string) bool {
			return count(m, "v1") == n
		}))
	}

	since := time.Now()
	setServices(t, s, ctx, "gates",
		service(t, s, "a", "v2", harness.MinAvailable(1), maxTwo),
		service(t, s, "b", "v2", harness.MinAvailable(1), byZone, harness.DependsOn("a")))
	rd, err := s.WaitForReady(ctx, "gates", rolloutTime)
	must(t, err)
	for _, svc := range []string{"a", "b"} {
		must(t, s.WaitForServiceVersions(ctx, svc, "v2", time.Minute))
		must(t, s.Recorder.WaitOnline(ctx, svc, time.Minute, "watcher sees every node on v2", func(m map[string]string) bool {
			return count(m, "v2") == n
		}))
	}

	// a: never more than 2 down; and the gate was what held it (3 or more at once would have
	// been allowed by the quorum).
	sets, at, missed := downSets(s, "a", since)
	most := 0
	for i, d := range sets {
		if len(d) > 2 {
			t.Fatalf("a: %d nodes down at %s (%v), maxUnavailable 2\n%s", len(d), at[i].Format(time.RFC3339Nano), d, s.Recorder.Report("a"))
		}
		most = max(most, len(d))
	}
	t.Logf("a: at most %d node(s) down at once in %d states seen (%d coalesced)", most, len(sets), missed)
	if most == 0 {
		t.Fatalf("a: the watcher saw no node down\n%s", s.Recorder.Report("a"))
	}

	// b: one zone at a time, at most 2 down, zone-a first.
	sets, at, missed = downSets(s, "b", since)
	zoneIdx := map[string]int{}
	for _, nd := range s.Nodes {
		zoneIdx[nd.Name] = nd.Index
	}
	var firstB time.Time
	for i, d := range sets {
		zones := map[string]bool{}
		for _, name := range d {
			zones[zoneOf(zoneIdx[name])] = true
			if zoneOf(zoneIdx[name]) == "zone-b" && firstB.IsZero() {
				firstB = at[i]
			}
		}
		if len(zones) > 1 || len(d) > 2 {
			t.Fatalf("b: %v down at %s: two zones at once, or more than 2 of one\n%s", d, at[i].Format(time.RFC3339Nano), s.Recorder.Report("b"))
		}
	}
	t.Logf("b: %d states seen (%d coalesced), never two zones down", len(sets), missed)
	for _, nd := range s.Nodes {
		if zoneOf(nd.Index) != "zone-a" {
			continue
		}
		var onV2 time.Time
		for _, c := range s.Recorder.History("b", nd.Name) {
			if c.Time.After(since) && c.Version == "v2" {
				onV2 = c.Time
			}
		}
		if onV2.IsZero() || firstB.IsZero() || !onV2.Before(firstB) {
			t.Fatalf("b: %s of zone-a back on v2 at %s, zone-b's first node down at %s: zone-a must finish first\n%s",
				nd.Name, onV2.Format(time.RFC3339Nano), firstB.Format(time.RFC3339Nano), s.Recorder.Report("b"))
		}
	}
	for _, svc := range []string{"a", "b"} {
		if st := harness.ServiceStatus(rd, svc); st == nil || st.Updated != n || st.Phase != rkv1alpha1.PhaseComplete || st.Gate != "" {
			t.Fatalf("status of %s: %+v", svc, st)
		}
	}

	// kubectl rollkeeper plan -f against the same cluster: b's v3 would go zone by zone, two
	// nodes a wave, and nothing changes.
	next := harness.NewRollingDeploy("gates",
		service(t, s, "a", "v2", harness.MinAvailable(1), maxTwo),
		service(t, s, "b", "v3", harness.MinAvailable(1), byZone, harness.DependsOn("a")))
	next.SetGroupVersionKind(rkv1alpha1.GroupVersion.WithKind("RollingDeploy"))
	manifest, err := yaml.Marshal(next)
	must(t, err)
	file := filepath.Join(t.TempDir(), "rd.yaml")
	must(t, os.WriteFile(file, manifest, 0o644))
	out, code := kubectlRollkeeper(t, s, ctx, "plan", "-f", file)
	if code != 0 || !strings.Contains(out, "order: a -> b") || !strings.Contains(out, "wave 1 (zone-a): node-1, node-2") ||
		!strings.Contains(out, "wave 3 (zone-b): node-4, node-5") || !strings.Contains(out, "skipped, already on v2") {
		t.Fatalf("plan (exit %d):\n%s", code, out)
	}
	after, err := s.WaitForRD(ctx, "gates", time.Minute, "the RollingDeploy", func(*rkv1alpha1.RollingDeploy) bool { return true })
	must(t, err)
	if after.Generation != rd.Generation || harness.ServiceStatus(after, "b").TargetVersion != "v2" {
		t.Fatalf("plan changed the RollingDeploy: generation %d -> %d", rd.Generation, after.Generation)
	}
}

// A maintenance window: outside it every node stages the new version and none stops; the
// status says when the window opens. A window that closes while a node is in the middle of
// its upgrade lets that upgrade finish and starts no other. Once the window is open (the spec
// moved it), the rollout runs to the end.
func TestGatesMaintenanceWindow(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"w"}})
	deployV1(t, s, ctx, "window", service(t, s, "w", "v1", harness.MinAvailable(1)))

	// A daily window that opened 12 hours ago and lasts an hour: closed now, opens in 12 h.
	now := time.Now().UTC()
	start := now.Add(-12 * time.Hour).Truncate(time.Minute)
	closed := rkv1alpha1.MaintenanceWindow{Start: start.Format("15:04"), End: start.Add(time.Hour).Format("15:04"), TimeZone: "UTC"}
	since := time.Now()
	// One node at a time (minAvailable 4 of 5); a health check that keeps probing for minutes,
	// so that the test decides when an upgrade in progress ends (it removes UNHEALTHY).
	slowHealth := harness.Mutate(func(sp *rkv1alpha1.ServiceSpec) { sp.HealthCheck.FailureThreshold = 1000 })
	v2 := func(w rkv1alpha1.MaintenanceWindow) rkv1alpha1.ServiceSpec {
		return service(t, s, "w", "v2", harness.MinAvailable(nodes-1), slowHealth,
			strategy(rkv1alpha1.StrategySpec{MaintenanceWindows: []rkv1alpha1.MaintenanceWindow{w}}))
	}
	setServices(t, s, ctx, "window", v2(closed))
	want := fmt.Sprintf("window opens at %s UTC", start.Add(24*time.Hour).Format("15:04"))
	rd, err := s.WaitForRD(ctx, "window", rolloutTime, "every node staged, held by the window", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "w")
		return st != nil && st.Staged == nodes && st.Gate == "window"
	})
	must(t, err)
	// The first waiter's agent says it waits for the window (its step decided not to stop).
	must(t, harness.WaitFor(ctx, time.Minute, "an agent waits for the window", func(context.Context) (bool, error) {
		for _, nd := range s.Nodes {
			if strings.Contains(nd.Agent.Log(), want) {
				return true, nil
			}
		}
		return false, nil
	}))
	st := harness.ServiceStatus(rd, "w")
	if st.Waiting != want || !strings.Contains(st.Message, "waiting: "+want) || st.Phase != rkv1alpha1.PhaseProgressing {
		t.Fatalf("status of w: waiting %q, message %q, phase %s; want %q", st.Waiting, st.Message, st.Phase, want)
	}
	// Every node is staged and the first waiter was held by the window: nobody left current/.
	for _, nd := range s.Nodes {
		if wentOffline(s, "w", nd.Name, since) {
			t.Fatalf("%s stopped w outside the maintenance window\n%s", nd.Name, s.Recorder.Report("w"))
		}
	}

	// The window opens and closes again while the first node is in the middle of its upgrade
	// (v2 fails its probes until the test says): that upgrade finishes, no other node starts.
	unhealthy := func(nd *harness.Node) string {
		return filepath.Join(nd.StateDir, "store", "w", "versions", "v2", "UNHEALTHY")
	}
	for _, nd := range s.Nodes { // every node is staged and none started v2: safe to touch
		must(t, os.WriteFile(unhealthy(nd), nil, 0o644))
	}
	open := rkv1alpha1.MaintenanceWindow{Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(2 * time.Hour).Format("15:04"), TimeZone: "UTC"}
	setServices(t, s, ctx, "window", v2(open))
	var first string
	must(t, s.Recorder.WaitStaging(ctx, "w", rolloutTime, "a node upgrading in the open window", func(m map[string]string) bool {
		for n, st := range m {
			if st == "upgrading v2" {
				first = n
				return true
			}
		}
		return false
	}))
	// The first waiter waits on the quorum while that node is in flight. Closed again, the
	// window holds it first: it says so (its last word was the quorum, so it logs anew).
	waits := func() (n int) {
		for _, nd := range s.Nodes {
			n += strings.Count(nd.Agent.Log(), want)
		}
		return n
	}
	before := waits()
	closedAgain := time.Now()
	setServices(t, s, ctx, "window", v2(closed))
	must(t, harness.WaitFor(ctx, time.Minute, "the first waiter sees the window closed again", func(context.Context) (bool, error) {
		return waits() > before, nil
	}))
	for _, nd := range s.Nodes {
		if nd.Name == first {
			must(t, os.Remove(unhealthy(nd)))
		}
	}
	must(t, s.Recorder.WaitOnline(ctx, "w", rolloutTime, first+" back on v2", func(m map[string]string) bool {
		return m[first] == "v2"
	}))
	// A node waiting for a window wakes for a plan change or the window's opening, not for a
	// registration: nothing else moves. The status counts the finished upgrade, still waiting.
	_, err = s.WaitForRD(ctx, "window", rolloutTime, first+" counted updated, the others held by the window", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "w")
		return harness.Observed(rd) && st != nil && st.Updated == 1 && st.Gate == "window"
	})
	must(t, err)
	for _, nd := range s.Nodes {
		if nd.Name != first && wentOffline(s, "w", nd.Name, closedAgain) {
			t.Fatalf("%s stopped w after the window closed\n%s", nd.Name, s.Recorder.Report("w"))
		}
	}
	t.Logf("%s finished the upgrade it started in the window; the others wait for the window", first)

	// Open the window now: the rollout finishes.
	for _, nd := range s.Nodes {
		if nd.Name != first {
			must(t, os.Remove(unhealthy(nd)))
		}
	}
	setServices(t, s, ctx, "window", v2(open))
	_, err = s.WaitForReady(ctx, "window", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "w", "v2", time.Minute))
}

// minHealthyTime: an upgraded node registers again (counts as upgraded, lets the next go) only
// after its new version stayed healthy that long; a version that turns unhealthy meanwhile is
// a failed health check: rolled back, the rollout halted, the reason in the status.
func TestGatesMinHealthyTime(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"h"}})
	one := intstr.FromInt32(1)
	hold := 2 * time.Second
	bake := strategy(rkv1alpha1.StrategySpec{MaxUnavailable: &one, MinHealthyTime: &metav1.Duration{Duration: hold}})
	events := filepath.Join(t.TempDir(), "events.jsonl")
	logEvents := harness.Mutate(func(sp *rkv1alpha1.ServiceSpec) { sp.Run.Args = append(sp.Run.Args, "--event-log="+events) })
	deployV1(t, s, ctx, "bake", service(t, s, "h", "v1", harness.MinAvailable(1), bake, logEvents))

	since := time.Now()
	setServices(t, s, ctx, "bake", service(t, s, "h", "v2", harness.MinAvailable(1), bake, logEvents))
	_, err := s.WaitForReady(ctx, "bake", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "h", "v2", time.Minute))
	must(t, s.Recorder.WaitOnline(ctx, "h", time.Minute, "watcher sees every node on v2", func(m map[string]string) bool {
		return count(m, "v2") == nodes
	}))
	// The fixture logs when it starts serving (exact, its own clock); the watcher sees the
	// registration at or after it happened. So the registration seen at least the hold after
	// the serving logged proves the node held.
	serving := fixtureServing(t, events, "h", "v2")
	for _, nd := range s.Nodes {
		var back time.Time
		for _, c := range s.Recorder.History("h", nd.Name) {
			if c.Time.After(since) && c.Version == "v2" {
				back = c.Time
			}
		}
		up, ok := serving[nd.Name]
		if !ok || back.IsZero() {
			t.Fatalf("%s: serving v2 at %v, registered on v2 at %v\n%s", nd.Name, up, back, s.Recorder.Report("h"))
		}
		if gap := back.Sub(up); gap < hold {
			t.Fatalf("%s registered on v2 %s after serving it, minHealthyTime %s\n%s", nd.Name, gap, hold, s.Recorder.Report("h"))
		} else {
			t.Logf("%s: registered %s after serving v2 (minHealthyTime %s)", nd.Name, gap.Round(time.Millisecond), hold)
		}
	}

	// v3 turns unhealthy on the first node while it holds (for ten minutes: the failure comes
	// within it however slow the probes): the node rolls back to v2, records the failure, and
	// nobody else goes.
	since = time.Now()
	long := strategy(rkv1alpha1.StrategySpec{MaxUnavailable: &one, MinHealthyTime: &metav1.Duration{Duration: 10 * time.Minute}})
	setServices(t, s, ctx, "bake", service(t, s, "h", "v3", harness.MinAvailable(1), long, logEvents))
	var victim *harness.Node
	must(t, harness.WaitFor(ctx, rolloutTime, "a node holds v3", func(context.Context) (bool, error) {
		for _, nd := range s.Nodes {
			for _, line := range strings.Split(nd.Agent.Log(), "\n") {
				if strings.Contains(line, "holding before counting as upgraded") && strings.Contains(line, `"version":"v3"`) {
					victim = nd
					return true, nil
				}
			}
		}
		return false, nil
	}))
	must(t, os.WriteFile(filepath.Join(victim.StateDir, "store", "h", "versions", "v3", "UNHEALTHY"), nil, 0o644))
	rd, err := s.WaitForRD(ctx, "bake", rolloutTime, "h failed", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "h")
		return st != nil && st.Phase == rkv1alpha1.PhaseFailed
	})
	must(t, err)
	st := harness.ServiceStatus(rd, "h")
	if len(st.FailedNodes) != 1 || st.FailedNodes[0].Node != victim.Name || !strings.Contains(st.FailedNodes[0].Reason, "minimum healthy time") {
		t.Fatalf("failed nodes %+v, want %s failing during the minimum healthy time", st.FailedNodes, victim.Name)
	}
	must(t, s.Recorder.WaitOnline(ctx, "h", time.Minute, "every node on v2 again", func(m map[string]string) bool {
		return count(m, "v2") == nodes
	}))
	for _, nd := range s.Nodes {
		if nd != victim && wentOffline(s, "h", nd.Name, since) {
			t.Fatalf("%s upgraded after %s failed\n%s", nd.Name, victim.Name, s.Recorder.Report("h"))
		}
	}
}

// fixtureServing reads the fixtures' event log: when each node's instance of svc began serving
// version (the last time, healthy).
func fixtureServing(t *testing.T, path, svc, version string) map[string]time.Time {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	out := map[string]time.Time{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var ev struct {
			Time    time.Time `json:"time"`
			Node    string    `json:"node"`
			Service string    `json:"service"`
			Version string    `json:"version"`
			Event   string    `json:"event"`
			Healthy bool      `json:"healthy"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event log line %q: %v", line, err)
		}
		if ev.Service == svc && ev.Version == version && ev.Event == "serving" && ev.Healthy {
			out[ev.Node] = ev.Time
		}
	}
	return out
}

// Canary: the first 2 nodes upgrade, then the service waits, its status saying so, until
// kubectl rollkeeper promote; then the others follow. The next version has a canary phase
// again; with a bake time it promotes itself once the canaries stayed up that long. A canary
// that turns unhealthy during its bake rolls back and halts the rollout.
func TestGatesCanaryThenPromote(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"c"}})
	two := intstr.FromInt32(2)
	canary := strategy(rkv1alpha1.StrategySpec{Canary: &rkv1alpha1.CanarySpec{Nodes: two}})
	deployV1(t, s, ctx, "canary", service(t, s, "c", "v1", harness.MinAvailable(1), canary))

	since := time.Now()
	setServices(t, s, ctx, "canary", service(t, s, "c", "v2", harness.MinAvailable(1), canary))
	rd, err := s.WaitForRD(ctx, "canary", rolloutTime, "two canaries on v2, the rest held", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "c")
		return st != nil && st.Updated == 2 && st.Gate == "canary" && st.Staged == nodes-2
	})
	must(t, err)
	st := harness.ServiceStatus(rd, "c")
	if want := "canary: 2 node(s) on v2; waiting for kubectl rollkeeper promote canary"; st.Waiting != want {
		t.Fatalf("waiting %q, want %q", st.Waiting, want)
	}
	// The first waiter's agent was held by the canary gate (its step decided not to stop).
	must(t, harness.WaitFor(ctx, time.Minute, "an agent waits for the promotion", func(context.Context) (bool, error) {
		for _, nd := range s.Nodes {
			if strings.Contains(nd.Agent.Log(), "waiting for kubectl rollkeeper promote canary") {
				return true, nil
			}
		}
		return false, nil
	}))
	down := 0
	for _, nd := range s.Nodes {
		if wentOffline(s, "c", nd.Name, since) {
			down++
		}
	}
	if on := count(s.Recorder.Online("c"), "v2"); down != 2 || on != 2 {
		t.Fatalf("%d node(s) went down, %d on v2 before the promotion, want 2 and 2\n%s", down, on, s.Recorder.Report("c"))
	}
	out, code := kubectlRollkeeper(t, s, ctx, "status", "canary")
	if code != 0 || !strings.Contains(out, "waiting (canary gate): canary: 2 node(s) on v2") || !strings.Contains(out, "strategy: canary 2") {
		t.Fatalf("status (exit %d):\n%s", code, out)
	}
	out, code = kubectlRollkeeper(t, s, ctx, "promote", "canary")
	if code != 0 || !strings.Contains(out, "promoted: c v2") {
		t.Fatalf("promote (exit %d):\n%s", code, out)
	}
	_, err = s.WaitForReady(ctx, "canary", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "c", "v2", time.Minute))

	// v3 with a bake time: the two canaries go, and the rest follow by themselves once they
	// ran v3 for the bake time, with no promotion.
	baked := strategy(rkv1alpha1.StrategySpec{Canary: &rkv1alpha1.CanarySpec{Nodes: two, BakeTime: &metav1.Duration{Duration: 2 * time.Second}}})
	setServices(t, s, ctx, "canary", service(t, s, "c", "v3", harness.MinAvailable(1), baked))
	_, err = s.WaitForReady(ctx, "canary", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "c", "v3", time.Minute))
	rd, err = s.WaitForRD(ctx, "canary", time.Minute, "v3 not promoted by hand", func(rd *rkv1alpha1.RollingDeploy) bool { return true })
	must(t, err)
	if v := rd.Annotations[rkv1alpha1.AnnotationPromotePrefix+"c"]; v != "v2" {
		t.Fatalf("promotion annotation %q: v3 promoted itself, nobody should have annotated it", v)
	}

	// v4 with a long bake: a canary that turns unhealthy once registered is caught by its own
	// checks through the bake. It leaves current/, rolls back to v3, and its failure halts the
	// rollout: the other nodes never go.
	long := strategy(rkv1alpha1.StrategySpec{Canary: &rkv1alpha1.CanarySpec{Nodes: two, BakeTime: &metav1.Duration{Duration: 10 * time.Minute}}})
	since = time.Now()
	setServices(t, s, ctx, "canary", service(t, s, "c", "v4", harness.MinAvailable(1), long))
	var canaries []string
	must(t, s.Recorder.WaitOnline(ctx, "c", rolloutTime, "two canaries registered on v4", func(m map[string]string) bool {
		canaries = canaries[:0]
		for n, v := range m {
			if v == "v4" {
				canaries = append(canaries, n)
			}
		}
		return len(canaries) == 2
	}))
	slices.Sort(canaries)
	victim := canaries[0]
	for _, nd := range s.Nodes {
		if nd.Name == victim {
			must(t, os.WriteFile(filepath.Join(nd.StateDir, "store", "c", "versions", "v4", "UNHEALTHY"), nil, 0o644))
		}
	}
	rd, err = s.WaitForRD(ctx, "canary", rolloutTime, victim+"'s failure in its bake halts c", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "c")
		if st == nil || st.Phase != rkv1alpha1.PhaseFailed {
			return false
		}
		for _, f := range st.FailedNodes {
			if f.Node == victim && f.Version == "v4" && strings.Contains(f.Reason, "during the canary's bake") {
				return true
			}
		}
		return false
	})
	must(t, err)
	must(t, s.Recorder.WaitOnline(ctx, "c", rolloutTime, victim+" back on v3", func(m map[string]string) bool { return m[victim] == "v3" }))
	for _, nd := range s.Nodes {
		if !slices.Contains(canaries, nd.Name) && wentOffline(s, "c", nd.Name, since) {
			t.Fatalf("%s went down for v4 although a canary failed in its bake\n%s\n%s", nd.Name, harness.DescribeStatus(rd), s.Recorder.Report("c"))
		}
	}
}

// The vetoes asked by the deciding agent itself. The alert gate: a real Prometheus scrapes the
// agents, and while the gate's query returns series (here: the service's up gauges, so it
// "fires" for sure) no node stops; the status says why. Then each node's preStopCheck: while
// a node's check says "not now" (its hold file exists), it holds, the status and can-stop
// name the reason; once the files go, the rollout finishes.
func TestGatesAlertAndPreStopCheck(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"g"}, AgentMetrics: true})
	var targets []string
	for _, nd := range s.Nodes {
		targets = append(targets, nd.MetricsAddr)
	}
	prom := startPrometheus(t, ctx, targets)
	deployV1(t, s, ctx, "veto", service(t, s, "g", "v1", harness.MinAvailable(1)))
	firing := `rollkeeper_agent_service_up{service="g"} == 1`
	must(t, harness.WaitFor(ctx, time.Minute, "prometheus has scraped every agent", func(context.Context) (bool, error) {
		n, err := prom.series(firing)
		return n == nodes, err
	}))

	holds := t.TempDir()
	for _, nd := range s.Nodes {
		must(t, os.WriteFile(filepath.Join(holds, "hold-"+nd.Name), []byte("replica catching up\n"), 0o644))
	}
	check := &rkv1alpha1.PreStopCheckSpec{PeriodSeconds: 1, TimeoutSeconds: 5, Exec: &rkv1alpha1.ExecCheck{Command: []string{"sh", "-c",
		`f="` + holds + `/hold-$ROLLKEEPER_NODE"; if [ -e "$f" ]; then cat "$f"; exit 1; fi`}}}
	gated := func(query string) harness.ServiceOption {
		return strategy(rkv1alpha1.StrategySpec{PreStopCheck: check, AlertGate: &rkv1alpha1.AlertGateSpec{URL: prom.URL, Query: query, PeriodSeconds: 1}})
	}
	since := time.Now()
	setServices(t, s, ctx, "veto", service(t, s, "g", "v2", harness.MinAvailable(1), gated(firing)))
	rd, err := s.WaitForRD(ctx, "veto", rolloutTime, "held by the alert gate", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "g")
		return st != nil && st.Gate == "alert" && st.Staged == nodes
	})
	must(t, err)
	if st := harness.ServiceStatus(rd, "g"); !strings.Contains(st.Waiting, "alert: 5 series for "+firing) {
		t.Fatalf("waiting %q", st.Waiting)
	}
	for _, nd := range s.Nodes {
		if wentOffline(s, "g", nd.Name, since) {
			t.Fatalf("%s stopped while the alert gate's query returned series\n%s", nd.Name, s.Recorder.Report("g"))
		}
	}

	// The alert clears (the query now returns nothing): each node's own check holds it.
	setServices(t, s, ctx, "veto", service(t, s, "g", "v2", harness.MinAvailable(1), gated(`rollkeeper_agent_service_up{service="g"} == 7`)))
	rd, err = s.WaitForRD(ctx, "veto", rolloutTime, "held by a node's preStopCheck", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "g")
		return st != nil && st.Gate == "preStopCheck"
	})
	must(t, err)
	st := harness.ServiceStatus(rd, "g")
	held, _, _ := strings.Cut(st.Waiting, " ")
	if !strings.HasSuffix(st.Waiting, "preStopCheck: exit status 1: replica catching up") || s.NodeByName(held) == nil {
		t.Fatalf("waiting %q", st.Waiting)
	}
	must(t, harness.WaitFor(ctx, time.Minute, "can-stop names the hold", func(context.Context) (bool, error) {
		out, code := kubectlRollkeeper(t, s, ctx, "can-stop", held, "--service", "g")
		return code == 1 && strings.Contains(out, "holds: preStopCheck: exit status 1: replica catching up"), nil
	}))
	for _, nd := range s.Nodes {
		if wentOffline(s, "g", nd.Name, since) {
			t.Fatalf("%s stopped while every preStopCheck said not now\n%s", nd.Name, s.Recorder.Report("g"))
		}
	}
	for _, nd := range s.Nodes {
		must(t, os.Remove(filepath.Join(holds, "hold-"+nd.Name)))
	}
	rd, err = s.WaitForReady(ctx, "veto", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "g", "v2", time.Minute))
	if st := harness.ServiceStatus(rd, "g"); st.Gate != "" {
		t.Fatalf("status after the rollout: %+v", st)
	}
}

// maxFailures 1: one node's new version fails its health check; that node rolls back, keeps
// v1 and is named in the status; the others go on, and the rollout completes without it.
func TestGatesMaxFailures(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"m"}})
	one := intstr.FromInt32(1)
	tolerate := strategy(rkv1alpha1.StrategySpec{MaxFailures: &one})
	deployV1(t, s, ctx, "failures", service(t, s, "m", "v1", harness.MinAvailable(2), tolerate))

	// Staged while paused, then v2 made unhealthy on one node before anyone upgrades.
	v2 := service(t, s, "m", "v2", harness.MinAvailable(2), tolerate)
	must(t, s.UpdateRD(ctx, "failures", func(rd *rkv1alpha1.RollingDeploy) {
		rd.Spec.Services, rd.Spec.Paused = []rkv1alpha1.ServiceSpec{v2}, true
	}))
	_, err := s.WaitForRD(ctx, "failures", rolloutTime, "every node staged v2", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "m")
		return st != nil && st.Staged == nodes && st.TargetVersion == "v2"
	})
	must(t, err)
	bad := s.Nodes[2]
	must(t, os.WriteFile(filepath.Join(bad.StateDir, "store", "m", "versions", "v2", "UNHEALTHY"), nil, 0o644))
	must(t, s.UpdateRD(ctx, "failures", func(rd *rkv1alpha1.RollingDeploy) { rd.Spec.Paused = false }))

	rd, err := s.WaitForReady(ctx, "failures", rolloutTime)
	must(t, err)
	st := harness.ServiceStatus(rd, "m")
	if st.Phase != rkv1alpha1.PhaseComplete || st.Updated != nodes-1 || len(st.FailedNodes) != 1 || st.FailedNodes[0].Node != bad.Name ||
		!strings.Contains(st.Message, "maxFailures 1") {
		t.Fatalf("status: %+v", st)
	}
	must(t, s.Recorder.WaitOnline(ctx, "m", time.Minute, "the failed node back on v1, the others on v2", func(m map[string]string) bool {
		return count(m, "v2") == nodes-1 && m[bad.Name] == "v1"
	}))
	var others []string
	for _, nd := range s.Nodes {
		if nd != bad {
			others = append(others, nd.Name)
		}
	}
	must(t, s.WaitForServiceVersions(ctx, "m", "v2", time.Minute, others...))
	must(t, s.WaitForServiceVersions(ctx, "m", "v1", time.Minute, bad.Name))
}
