package nodeagent_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkcache"
	"github.com/rollkeeper/rollkeeper/nodeagent"
)

var (
	scaleNodes   = flag.String("scale.nodes", "100", "BenchmarkScale: fleet sizes, comma-separated")
	scaleRestart = flag.Duration("scale.restart", time.Second, "BenchmarkScale: how long each restart of the host service takes")
	scaleQuorum  = flag.Float64("scale.quorum", 0.9, "BenchmarkScale: minAvailable as a fraction of the fleet")
	scaleSession = flag.Duration("scale.session", 4*time.Second, "BenchmarkScale: ZooKeeper session timeout of every agent (and so its roll call wait); thousands of agents in one process on few cores need more than one agent per machine does")
)

// BenchmarkScale rolls one service v1 -> v2 on N in-process agents (memory backend, each start
// taking -scale.restart) against one real ZooKeeper, and prints what issue 12 measures: the
// rollout's wall time against the bound N·T/P the quorum allows (T the restart time, P the
// nodes allowed down at once), the most nodes down at once by ground truth (the backends, not
// ZooKeeper) against P, ZooKeeper requests and watch events per node, and heap per agent.
// A benchmark, not a test: it prints figures and fails only if the rollout breaks the quorum
// or does not finish.
func BenchmarkScale(b *testing.B) {
	for _, f := range strings.Split(*scaleNodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			b.Fatalf("-scale.nodes: %q is not a fleet size of at least 2", f)
		}
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				scaleRollout(b, n)
			}
		})
	}
}

func scaleRollout(b *testing.B, n int) {
	minAvailable := int(float64(n) * *scaleQuorum)
	allowed := n - minAvailable
	if allowed < 1 {
		b.Fatalf("quorum %.2f of %d nodes lets no node go down", *scaleQuorum, n)
	}
	// Generous deadlines: the figures, not a timeout, say how slow it is.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	b.StopTimer()
	h := newTrafficHarness(b, ctx, minAvailable)
	h.startup = *scaleRestart
	h.session = *scaleSession
	defer h.stop()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h.publish("a", "v1", "")
	startAt := time.Now()
	for i := 1; i <= n; i++ {
		h.startAgent(fmt.Sprintf("node-%05d", i))
	}
	h.waitFor("all nodes online on v1", time.Hour, func() bool {
		vs := h.versions("a")
		progress(startAt, n, "v1", vs)
		return allOn(vs, n, "v1") && len(h.deployQueue()) == 0
	})
	startup := time.Since(startAt)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)

	rss := rssBytes()

	h.av.arm()
	t0 := h.stats()
	zero := make([]agentStats, len(t0))
	op := startStatusPasses(b, h, "a", 250*time.Millisecond)
	b.StartTimer()
	began := time.Now()
	h.publish("a", "v2", "v1")
	h.waitFor("all nodes online on v2", 2*time.Hour, func() bool {
		vs := h.versions("a")
		progress(began, n, "v2", vs)
		return allOn(vs, n, "v2")
	})
	wall := time.Since(began)
	b.StopTimer()
	rollout := delta(t0, h.stats())
	start := delta(zero, t0)
	tr := rollout.traffic
	passes := op.stop()
	// Every decision starts one roll call round: a new data version of rollcall/<svc>.
	_, rc, err := h.zk.Get(h.ctx, h.layout.RollCall("a"))
	h.must(err)

	dec := h.decisions()
	down := n - h.av.min("a")
	if h.av.min("a") < minAvailable {
		b.Errorf("quorum broken: %d running at the lowest, minAvailable %d", h.av.min("a"), minAvailable)
	}
	bound := time.Duration(float64(*scaleRestart) * float64(n) / float64(allowed))
	per := func(v int64) float64 { return float64(v) / float64(n) }
	heap := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(n) / 1024
	rssPer := float64(rss-rssAtStart) / float64(n) / 1024
	b.ReportMetric(wall.Seconds(), "s/rollout")
	b.ReportMetric(float64(down), "down-at-once")
	b.ReportMetric(per(tr.Reads+tr.Writes), "zk-requests/node")
	// To stderr at once as well: the benchmark's own log comes only after thousands of agents
	// have stopped.
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench-scale "+format+"\n", args...)
		b.Logf(format, args...)
	}
	logf("N=%d quorum %d (P=%d may be down), restart %v: rollout %v, bound N·T/P %v (%.1f×), %d roll call rounds (%d decisions admitting %d nodes with them, %d too few answers); "+
		"down at once %d of %d allowed; per node: %.1f ZooKeeper requests (%.1f reads, %.1f writes, %.1f watches set), "+
		"%.1f watch events; agents up in %v; heap %.0f KiB, RSS %.0f KiB per agent; "+
		"operator status pass (watch-fed cache): %d requests cold, then %.1f per pass over %d passes (%d failed); "+
		"agents' sessions expired: %d in start-up, %d in the rollout; connections re-established: %d, %d; "+
		"the %d agents that kept one connection in the rollout: %.1f requests, %.1f watch events each",
		n, minAvailable, allowed, *scaleRestart, wall.Round(time.Millisecond), bound, wall.Seconds()/bound.Seconds(), rc.Version,
		dec.taken, dec.admitted, dec.tooFew,
		down, allowed, per(tr.Reads+tr.Writes), per(tr.Reads), per(tr.Writes), per(tr.Watches), per(tr.WatchesFired),
		startup.Round(time.Millisecond), heap, rssPer, passes.cold, passes.perPass(), passes.n, passes.failed,
		start.expired, rollout.expired, start.reconnected, rollout.reconnected,
		rollout.steady, float64(rollout.steadyRequests)/float64(max(rollout.steady, 1)),
		float64(rollout.steadyWatches)/float64(max(rollout.steady, 1)))
}

// decisionCounts sums the fleet's decisions from the agents' metrics: roll calls that admitted
// (each a decision), the others they took down with them, and roll calls too few answered.
type decisionCounts struct{ taken, admitted, tooFew int }

func (h *trafficHarness) decisions() decisionCounts {
	var d decisionCounts
	for _, a := range h.agents {
		mfs, err := a.m.Registry().Gather()
		h.must(err)
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				v := int(m.GetCounter().GetValue())
				switch mf.GetName() {
				case nodeagent.MetricAdmitted:
					d.admitted += v
				case nodeagent.MetricRollCalls:
					for _, l := range m.GetLabel() {
						switch {
						case l.GetName() != nodeagent.LabelResult:
						case l.GetValue() == nodeagent.ResultSuccess:
							d.taken += v
						case l.GetValue() == nodeagent.ResultTooFew:
							d.tooFew += v
						}
					}
				}
			}
		}
	}
	return d
}

// rssAtStart is the process's RSS before any fleet: agents' RSS is what grew since.
var rssAtStart = rssBytes()

// rssBytes reads the process's resident set size (0 where /proc is missing).
func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

var lastProgress time.Time

// progress prints how far the rollout is every 30 s to stderr: a large fleet's run takes
// minutes and the benchmark's figures come only at its end.
func progress(began time.Time, n int, version string, versions map[string]string) {
	if time.Since(lastProgress) < 30*time.Second {
		return
	}
	lastProgress = time.Now()
	on := 0
	for _, v := range versions {
		if v == version {
			on++
		}
	}
	fmt.Fprintf(os.Stderr, "bench-scale N=%d: %d of %d online on %s after %v\n", n, on, n, version, time.Since(began).Round(time.Second))
}

// statusPasses reads a service's state as the operator's status pass does (rollout's reader,
// then the progress children, through a watch-fed cache, on a session of its own) every
// interval, and counts the requests each pass costs.
type statusPasses struct {
	cancel context.CancelFunc
	done   chan passCost
}

type passCost struct {
	cold, rest int64
	n          int
	// failed counts passes that failed (a lost connection): the operator's pass is retried
	// on its next tick too.
	failed int
}

func (p passCost) perPass() float64 {
	if p.n <= 1 {
		return 0
	}
	return float64(p.rest) / float64(p.n-1)
}

func startStatusPasses(b *testing.B, h *trafficHarness, svc string, every time.Duration) *statusPasses {
	zk := h.dial()
	cache := zkcache.New(zk, 0)
	ctx, cancel := context.WithCancel(h.ctx)
	p := &statusPasses{cancel: cancel, done: make(chan passCost, 1)}
	go func() {
		defer zk.Close()
		var cost passCost
		defer func() { p.done <- cost }()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			before := zk.Traffic().Reads
			if _, err := rollout.NewReader(cache, h.layout, svc, "", nil).Read(ctx, 0); err != nil {
				if ctx.Err() != nil {
					return
				}
				cost.failed++
				fmt.Fprintf(os.Stderr, "bench-scale: status pass failed (tried again on the next tick): %v\n", err)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				continue
			}
			names, _, err := cache.Children(ctx, h.layout.ProgressService(svc))
			if err == nil {
				for _, name := range names {
					_, _, _ = cache.Get(ctx, h.layout.ProgressNode(svc, name))
				}
			}
			r := zk.Traffic().Reads - before
			if cost.n == 0 {
				cost.cold = r
			} else {
				cost.rest += r
			}
			cost.n++
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *statusPasses) stop() passCost {
	p.cancel()
	return <-p.done
}
