package nodeagent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
)

// BenchmarkZooKeeperTraffic measures the ZooKeeper requests the agents send for one rollout:
// each iteration starts N fresh agents on v1 of one service (under a root of its own), then
// rolls it to v2 with minAvailable n - n/4 (trafficMinAvailable). Counted, over every agent's session: from the moment the v2 release, deploy
// entry and plan are published until every agent serves v2 (its current znode says v2).
// Reported per node and per rollout. The test's own session (standing in for the operator and
// polling for the outcome) is not counted.
func BenchmarkZooKeeperTraffic(b *testing.B) {
	for _, n := range []int{5, 20} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var sum, settled zkclient.Traffic
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				t, s := trafficRollout(b, n)
				sum, settled = sum.Add(t), settled.Add(s)
			}
			per := func(v int64) float64 { return float64(v) / float64(n) / float64(b.N) }
			b.ReportMetric(per(sum.Reads), "reads/node/rollout")
			b.ReportMetric(per(sum.Watches), "watches/node/rollout")
			b.ReportMetric(per(sum.Writes), "writes/node/rollout")
			b.Logf("N=%d (minAvailable %d), %d rollouts: per node per rollout %.2f reads, %.2f watches set, %.2f writes (%.2f multi ops), %.2f watch events",
				n, trafficMinAvailable(n), b.N, per(sum.Reads), per(sum.Watches), per(sum.Writes), per(sum.MultiOps), per(sum.WatchesFired))
			b.Logf("N=%d, until the deploy entry is gone too: per node per rollout %.2f reads, %.2f watches set, %.2f writes (%.2f multi ops), %.2f watch events",
				n, per(settled.Reads), per(settled.Watches), per(settled.Writes), per(settled.MultiOps), per(settled.WatchesFired))
		})
	}
}

// trafficMinAvailable is a usual rolling update's quorum: a quarter of the nodes (at least one)
// may be down at a time, 4 of 5 and 15 of 20 stay up (TestRaceForQuorum's).
func trafficMinAvailable(n int) int { return n - max(1, n/4) }

// trafficRollout runs one v1 to v2 rollout on n fresh agents and returns the agents' traffic
// until every one serves v2, and until the deploy entry is gone as well. The benchmark timer
// runs during the rollout only.
func trafficRollout(b *testing.B, n int) (toV2, toSettled zkclient.Traffic) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := newTrafficHarness(b, ctx, trafficMinAvailable(n))
	defer h.stop()
	h.publish("a", "v1", "")
	for i := 1; i <= n; i++ {
		h.startAgent(fmt.Sprintf("node-%02d", i))
	}
	h.waitFor("all nodes online on v1", time.Minute, func() bool {
		return allOn(h.versions("a"), n, "v1") && len(h.deployQueue()) == 0
	})

	before := h.traffic()
	b.StartTimer()
	h.publish("a", "v2", "v1")
	h.waitFor("all nodes online on v2", 2*time.Minute, func() bool { return allOn(h.versions("a"), n, "v2") })
	b.StopTimer()
	toV2 = h.traffic().Sub(before)
	h.waitFor("v2 deploy entry removed", time.Minute, func() bool { return len(h.deployQueue()) == 0 })
	return toV2, h.traffic().Sub(before)
}

// trafficHarness is the part of env a benchmark needs (env is bound to a *testing.T): one
// service's releases and plans written as the operator does, unsigned and without auth, and
// agents configured as env.startAgent configures them.
type trafficHarness struct {
	b      *testing.B
	ctx    context.Context
	layout zklayout.Layout
	zk     *zkclient.Client
	srv    *httptest.Server
	mu     sync.Mutex
	files  map[string][]byte
	av     *availability
	// minAvailable goes into the plans; startup is how long each start takes (0: 100 ms).
	minAvailable int
	startup      time.Duration
	// session is the ZooKeeper session timeout of every session (0: 4 s).
	session time.Duration
	agents  []*testAgent
}

func newTrafficHarness(b *testing.B, ctx context.Context, minAvailable int) *trafficHarness {
	b.Helper()
	h := &trafficHarness{b: b, ctx: ctx, layout: zklayout.MustNew(fmt.Sprintf("/bench-zk-traffic-%d", envs.Add(1))),
		files: map[string][]byte{}, av: newAvailability(), minAvailable: minAvailable}
	h.zk = h.dial()
	for _, p := range h.layout.Bases() {
		h.must(h.zk.EnsurePath(ctx, p))
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		body, ok := h.files[r.URL.Path]
		h.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}))
	return h
}

// benchRecvBuffer is the benchmark agents' receive buffer: their largest response, the staging
// queue's child list, is about 25 bytes per node ("node-00001-0000000001" and its length), so
// 512 KiB holds 20,000 nodes' (a smaller buffer per agent lets more agents fit in one process).
const benchRecvBuffer = 512 << 10

func (h *trafficHarness) dial() *zkclient.Client {
	h.b.Helper()
	session := h.session
	if session <= 0 {
		session = 4 * time.Second
	}
	c, err := zkclient.Dial(h.ctx, zkclient.Config{Servers: zkclient.ParseServers(zkConnect), SessionTimeout: session, Logger: logr.Discard(),
		SendBuffer: zkclient.AgentSendBuffer, RecvBuffer: benchRecvBuffer})
	h.must(err)
	return c
}

func (h *trafficHarness) must(err error) {
	h.b.Helper()
	if err != nil {
		h.b.Fatal(err)
	}
}

// stop ends the agents and every session, so the next iteration starts on an idle server.
func (h *trafficHarness) stop() {
	// All at once: one by one, thousands of agents take minutes to stop (each waits for its
	// workers, then for its session's close).
	for _, a := range h.agents {
		a.cancel()
	}
	var wg sync.WaitGroup
	closing := make(chan *testAgent)
	for range min(len(h.agents), 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range closing {
				<-a.done
				a.zk.Close()
			}
		}()
	}
	for _, a := range h.agents {
		closing <- a
	}
	close(closing)
	wg.Wait()
	h.zk.Close()
	h.srv.Close()
}

// agentStats is one agent's traffic and session accounting at a moment.
type agentStats struct {
	traffic  zkclient.Traffic
	sessions zkclient.SessionStats
}

func (h *trafficHarness) stats() []agentStats {
	out := make([]agentStats, len(h.agents))
	for i, a := range h.agents {
		out[i] = agentStats{a.zk.Traffic(), a.zk.SessionStats()}
	}
	return out
}

// fleetDelta sums what the agents did between two stats: traffic, sessions expired and
// connections re-established (each costs its agent a fresh start: registration, sample,
// reads), and apart the requests of the agents that kept one connection throughout.
type fleetDelta struct {
	traffic                       zkclient.Traffic
	expired, reconnected          int64
	steady                        int
	steadyRequests, steadyWatches int64
}

func delta(before, after []agentStats) fleetDelta {
	var d fleetDelta
	for i := range after {
		t := after[i].traffic.Sub(before[i].traffic)
		d.traffic = d.traffic.Add(t)
		exp := after[i].sessions.Expirations - before[i].sessions.Expirations
		rec := after[i].sessions.Reconnects - before[i].sessions.Reconnects
		d.expired += exp
		d.reconnected += rec
		if exp == 0 && rec == 0 {
			d.steady++
			d.steadyRequests += t.Reads + t.Writes
			d.steadyWatches += t.WatchesFired
		}
	}
	return d
}

func (h *trafficHarness) traffic() zkclient.Traffic {
	var sum zkclient.Traffic
	for _, a := range h.agents {
		sum = sum.Add(a.zk.Traffic())
	}
	return sum
}

// publish is env.publish without signing and health check: failure policy Pause and the
// harness's minAvailable.
func (h *trafficHarness) publish(svc, version, previous string) {
	body := []byte("artifact " + svc + " " + version)
	sum := sha256.Sum256(body)
	url := "/" + svc + "-" + version
	h.mu.Lock()
	h.files[url] = body
	h.mu.Unlock()
	enc := func(p zklayout.Payload) []byte {
		data, err := zklayout.Encode(p)
		h.must(err)
		return data
	}
	rel := enc(&zklayout.Release{Service: svc, Version: version,
		Artifact: zklayout.Artifact{URL: h.srv.URL + url, SHA256: hex.EncodeToString(sum[:]), Unpack: zklayout.UnpackNone},
		Run:      zklayout.Run{Command: []string{"/bin/true"}}})
	h.must(h.zk.EnsurePath(h.ctx, h.layout.ReleaseService(svc)))
	if _, err := h.zk.Create(h.ctx, h.layout.Release(svc, version), rel, zkclient.Persistent); err != nil && !errors.Is(err, zkclient.ErrNodeExists) {
		h.b.Fatal(err)
	}
	_, err := h.zk.Create(h.ctx, h.layout.DeployPrefix(svc), enc(&zklayout.DeployEntry{Deploy: "test", Service: svc, Version: version}),
		zkclient.PersistentSequential)
	h.must(err)
	plan := enc(&zklayout.Plan{Deploy: "test", DeployUID: "uid", Service: svc, Version: version, PreviousVersion: previous,
		MinAvailable: h.minAvailable, FailurePolicy: zklayout.FailurePolicyPause})
	if _, err := h.zk.Set(h.ctx, h.layout.StagingService(svc), plan, -1); errors.Is(err, zkclient.ErrNoNode) {
		_, err = h.zk.Create(h.ctx, h.layout.StagingService(svc), plan, zkclient.Persistent)
		h.must(err)
	} else {
		h.must(err)
	}
}

func (h *trafficHarness) startAgent(name string) {
	zk := h.dial()
	st, err := store.New(filepath.Join(h.b.TempDir(), name), fetch.NewHTTP())
	h.must(err)
	startup := h.startup
	if startup == 0 {
		startup = 100 * time.Millisecond
	}
	be := countingBackend{Memory: backend.NewMemory(), av: h.av, startup: startup}
	m := nodeagent.NewMetrics()
	a, err := nodeagent.New(nodeagent.Config{Node: name, Address: "127.0.0.1", Layout: h.layout, ZK: zk,
		Backend: be, Store: st, Logger: logr.Discard(), PinHold: time.Minute, RetryInterval: 50 * time.Millisecond,
		MaxRetryInterval: time.Second, Metrics: m})
	h.must(err)
	ctx, cancel := context.WithCancel(h.ctx)
	ta := &testAgent{name: name, zk: zk, be: be, m: m, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(ta.done); _ = a.Run(ctx) }()
	h.agents = append(h.agents, ta)
}

func (h *trafficHarness) versions(svc string) map[string]string {
	out := map[string]string{}
	names, _, err := h.zk.Children(h.ctx, h.layout.CurrentService(svc))
	if err != nil {
		return out
	}
	for _, n := range names {
		data, _, err := h.zk.Get(h.ctx, h.layout.CurrentNode(svc, n))
		var c zklayout.Current
		if err == nil && zklayout.Decode(data, &c) == nil {
			out[n] = c.Version
		}
	}
	return out
}

func (h *trafficHarness) deployQueue() []string {
	names, _, err := h.zk.Children(h.ctx, h.layout.Deploy())
	h.must(err)
	return names
}

// waitFor is env.waitFor: poll cond until it holds or the deadline passes.
func (h *trafficHarness) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.b.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.b.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-h.ctx.Done():
			h.b.Fatalf("context done waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
