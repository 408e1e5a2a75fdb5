package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

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
}

// A maintenance window: outside it every node stages the new version and none stops; the
// status says when the window opens; once the window is open (the spec moved it), the
// rollout runs to the end.
func TestGatesMaintenanceWindow(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"w"}})
	deployV1(t, s, ctx, "window", service(t, s, "w", "v1", harness.MinAvailable(1)))

	// A daily window that opened 12 hours ago and lasts an hour: closed now, opens in 12 h.
	now := time.Now().UTC()
	start := now.Add(-12 * time.Hour).Truncate(time.Minute)
	closed := rkv1alpha1.MaintenanceWindow{Start: start.Format("15:04"), End: start.Add(time.Hour).Format("15:04"), TimeZone: "UTC"}
	since := time.Now()
	setServices(t, s, ctx, "window", service(t, s, "w", "v2", harness.MinAvailable(1),
		strategy(rkv1alpha1.StrategySpec{MaintenanceWindows: []rkv1alpha1.MaintenanceWindow{closed}})))
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

	// Open the window now: the rollout finishes.
	open := rkv1alpha1.MaintenanceWindow{Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(2 * time.Hour).Format("15:04"), TimeZone: "UTC"}
	setServices(t, s, ctx, "window", service(t, s, "w", "v2", harness.MinAvailable(1),
		strategy(rkv1alpha1.StrategySpec{MaintenanceWindows: []rkv1alpha1.MaintenanceWindow{open}})))
	_, err = s.WaitForReady(ctx, "window", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "w", "v2", time.Minute))
}
