package dryrun

import (
	"sort"
	"time"
)

// DefaultWave is the time a wave is assumed to take, plus minHealthyTime, when no previous
// rollout tells better.
const DefaultWave = 10 * time.Second

// WaveTime estimates how long one wave took in the service's last rollout, from since: when
// each node on that rollout's target registered it (RollingDeployNodeSet entries carry it, in
// whole seconds). A node registers its new version once it has stopped the old one, started
// the new one, passed its health check and stayed healthy minHealthyTime; the next wave stops
// only after that. So the time from one registration to the next is one wave's cycle, waits
// for the gates included. Nodes of one wave come back within about the same second: gaps of
// 0 s are left out. The result is the median of the other gaps (robust to a node that came
// back late, or a wait for a window), with how many gaps it is taken over; 0 gaps: no
// estimate (fewer than two distinct registrations).
func WaveTime(since []time.Time) (median time.Duration, gaps int) {
	ts := append([]time.Time(nil), since...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	var ds []time.Duration
	for i := 1; i < len(ts); i++ {
		if d := ts[i].Sub(ts[i-1]); d >= time.Second {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return 0, 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	mid := len(ds) / 2
	if len(ds)%2 == 1 {
		return ds[mid], len(ds)
	}
	return (ds[mid-1] + ds[mid]) / 2, len(ds)
}
