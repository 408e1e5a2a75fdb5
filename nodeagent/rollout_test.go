package nodeagent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/pagecache"
)

func failingCheck(script string) *zklayout.HealthCheck {
	return &zklayout.HealthCheck{Exec: &zklayout.Exec{Command: []string{"/bin/sh", "-c", script}},
		TimeoutSeconds: 5, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
}

func (e *env) failures(svc string) map[string]zklayout.Failure {
	out := map[string]zklayout.Failure{}
	names, _, err := e.zk.Children(e.ctx, e.layout.FailureService(svc))
	if err != nil {
		return out
	}
	for _, n := range names {
		data, _, err := e.zk.Get(e.ctx, e.layout.Failure(svc, n))
		var f zklayout.Failure
		if err == nil && zklayout.Decode(data, &f) == nil {
			out[n] = f
		}
	}
	return out
}

func count(vs map[string]string, version string) int {
	n := 0
	for _, v := range vs {
		if v == version {
			n++
		}
	}
	return n
}

// A version that fails its health check on the first node to try it: that node rolls back and
// records the failure, nobody else upgrades, and the deploy entry stays (the rollout is halted).
func TestHealthFailureHaltsRollout(t *testing.T) {
	const nodes = 4
	e := newEnv(t)
	e.publish("a", "v1", "", nodes-1, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0 })

	e.publish("a", "v2", "v1", nodes-1, zklayout.FailurePolicyPause, failingCheck("exit 1"))
	e.waitFor("a failure record", time.Minute, func() bool { return len(e.failures("a")) == 1 })
	e.waitFor("the failed node back online on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") })
	// Every other node stays staged and never goes: its queue predecessor left, it re-read
	// the failures, and it waits for a new plan.
	e.waitFor("no node still queued", time.Minute, func() bool {
		names, _, err := e.zk.Children(e.ctx, e.layout.StagingService("a"))
		return err == nil && len(names) == 0
	})
	if got := count(e.versions("a"), "v2"); got != 0 {
		t.Fatalf("%d nodes on v2 after the failure", got)
	}
	for n, f := range e.failures("a") {
		if f.Kind != zklayout.FailureHealthCheck || f.Version != "v2" || f.Node != n {
			t.Fatalf("failure record %s = %+v", n, f)
		}
	}
	if q := e.deployQueue(); len(q) != 1 {
		t.Fatalf("deploy queue = %v, want the halted entry kept", q)
	}
}

// With the Rollback policy, nodes already on the new version go back to the previous one,
// quorum-safe, once any node records a health failure.
func TestRollbackPolicy(t *testing.T) {
	const nodes = 5
	e := newEnv(t)
	e.publish("a", "v1", "", 3, zklayout.FailurePolicyRollback, nil)
	e.startAgents(nodes)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0 })

	e.av.arm()
	// Healthy everywhere but on the last node to try it: by then the others run v2.
	marker := t.TempDir() + "/upgraded"
	e.publish("a", "v2", "v1", 3, zklayout.FailurePolicyRollback,
		failingCheck(`n=$(ls `+marker+`* 2>/dev/null | wc -l); touch `+marker+`-$ROLLKEEPER_NODE; test "$n" -lt 2`))
	e.waitFor("a failure record", time.Minute, func() bool { return len(e.failures("a")) >= 1 })
	e.waitFor("every node back on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") })
	if got := e.av.min("a"); got < 3 {
		t.Fatalf("quorum violated during rollback: %d running", got)
	}
}

// Paused plans stage but do not upgrade; unpausing resumes.
func TestPaused(t *testing.T) {
	const nodes = 3
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0 })

	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	setPaused := func(paused bool) {
		data, st, err := e.zk.Get(e.ctx, e.layout.StagingService("a"))
		must(t, err)
		var p zklayout.Plan
		must(t, zklayout.Decode(data, &p))
		p.Paused = paused
		b, err := zklayout.Encode(&p)
		must(t, err)
		_, err = e.zk.Set(e.ctx, e.layout.StagingService("a"), b, st.Version)
		must(t, err)
	}
	// Race the agents: pause right after publishing. Whatever went before the pause landed,
	// and every node must end staged or upgraded.
	setPaused(true)
	e.waitFor("every node staged or on v2", time.Minute, func() bool {
		names, _, err := e.zk.Children(e.ctx, e.layout.StagingService("a"))
		return err == nil && len(names)+count(e.versions("a"), "v2") == nodes
	})
	onV2 := count(e.versions("a"), "v2")
	setPaused(false)
	e.waitFor("all on v2", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v2") && len(e.deployQueue()) == 0 })
	t.Logf("%d of %d nodes had upgraded before the pause took effect", onV2, nodes)
}

// A malformed plan is never acted on: nodes keep running what they run.
func TestMalformedPlanIgnored(t *testing.T) {
	const nodes = 2
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0 })
	_, err := e.zk.Set(e.ctx, e.layout.StagingService("a"), []byte(`{"schema":99,"version":"v2"}`), -1)
	must(t, err)
	_, err = e.zk.Create(e.ctx, e.layout.DeployPrefix("a"), []byte(`not json`), zkclient.PersistentSequential)
	must(t, err)
	// Give the agents a real chance to (wrongly) act: a fresh node joins and must still come up on v1.
	late := e.startAgent("node-late")
	e.waitFor("the late node online", time.Minute, func() bool { return len(e.versions("a")) == nodes+1 })
	if vs := e.versions("a"); !allOn(vs, nodes+1, "v1") {
		t.Fatalf("versions after a malformed plan: %v", vs)
	}
	_ = late
}

// A node whose machine was down comes back on the most popular version among its peers.
func TestReturningNodeStartsMostPopular(t *testing.T) {
	const nodes = 3
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0 })
	// Publish v2 but keep it from rolling: the plan is paused.
	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.pausePlan("a")
	// A fresh machine (empty backend) starts v1, the most popular, not the plan's v2.
	e.startAgent("node-new")
	e.waitFor("new node online", time.Minute, func() bool { return len(e.versions("a")) == nodes+1 })
	if v := e.versions("a")["node-new"]; v != "v1" && count(e.versions("a"), "v2") == 0 {
		t.Fatalf("returning node started %s, want the most popular v1", v)
	}
}

// With more peers registered than rollout.MaxSample, a fresh node picks the version it starts
// from a sample of their registrations, not a read of every one: here 100 peers (live
// registrations of the test's session), 81 on v1 and 19 on v2, so every sample of 64 holds a
// majority on v1.
func TestFreshNodeStartsFromASample(t *testing.T) {
	const peers, onV2 = 100, 19
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.paused = true
	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	must(t, e.zk.EnsurePath(e.ctx, e.layout.CurrentService("a")))
	for i := range peers {
		v := "v1"
		if i < onV2 {
			v = "v2"
		}
		n := fmt.Sprintf("peer-%03d", i)
		reg, err := zklayout.Encode(&zklayout.Current{Node: n, Version: v, Address: "127.0.0.1", Health: zklayout.HealthHealthy, Since: time.Now().UTC()})
		must(t, err)
		_, err = e.zk.Create(e.ctx, e.layout.CurrentNode("a", n), reg, zkclient.Ephemeral)
		must(t, err)
	}
	// The agent's reads are counted when it starts the service: its choice is made by then.
	var agent atomic.Pointer[testAgent]
	added := make(chan struct{})
	starts := make(chan int64, 1)
	e.wrapBackend = func(node string, b backend.Backend) backend.Backend {
		return onStart{Backend: b, start: func() {
			<-added
			select {
			case starts <- agent.Load().zk.Traffic().Reads:
			default:
			}
		}}
	}
	agent.Store(e.startAgent("node-new"))
	close(added)
	e.waitFor("the fresh node online", time.Minute, func() bool { return e.versions("a")["node-new"] != "" })
	reads := <-starts
	if v := e.versions("a")["node-new"]; v != "v1" {
		t.Fatalf("fresh node started %s, want v1 (%d of %d peers run it)", v, peers-onV2, peers)
	}
	if reads >= peers {
		t.Errorf("fresh node made %d reads to start, want fewer than its %d peers' registrations", reads, peers)
	}
	t.Logf("started v1 after %d reads (%d peers)", reads, peers)
}

// onStart calls start before each start of a service.
type onStart struct {
	backend.Backend
	start func()
}

func (o onStart) Start(ctx context.Context, svc string, spec backend.Spec) error {
	o.start()
	return o.Backend.Start(ctx, svc, spec)
}

// pausePlan rewrites svc's plan paused (as the operator does for spec.paused).
func (e *env) pausePlan(svc string) {
	data, st, err := e.zk.Get(e.ctx, e.layout.StagingService(svc))
	must(e.t, err)
	var p zklayout.Plan
	must(e.t, zklayout.Decode(data, &p))
	p.Paused = true
	_, err = e.zk.Set(e.ctx, e.layout.StagingService(svc), e.encode(e.layout.StagingService(svc), &p), st.Version)
	must(e.t, err)
}

// gatedFetcher fails until opened: a node that cannot get the artifact yet.
type gatedFetcher struct {
	open atomic.Bool
	next fetch.Fetcher
}

func (g *gatedFetcher) Fetch(ctx context.Context, rel *zklayout.Release, dest string) error {
	if rel.Version != "v1" && !g.open.Load() {
		return errors.New("origin unreachable from this node")
	}
	return g.next.Fetch(ctx, rel, dest)
}

// The distribution gate: with minStaged 3 of 3 and one node unable to fetch the version, the
// two that have it staged do not stop for it; once the third fetches it, the rollout proceeds.
func TestDistributionGate(t *testing.T) {
	e := newEnv(t)
	gate := &gatedFetcher{next: fetch.NewHTTP()}
	e.fetcherFor = func(name string) fetch.Fetcher {
		if name == "node-03" {
			return gate
		}
		return fetch.NewHTTP()
	}
	three := 3
	e.minStaged = &three
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(3)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), 3, "v1") && len(e.deployQueue()) == 0 })

	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.waitFor("two nodes staged and node-03's fetch failure recorded", time.Minute, func() bool {
		names, _, err := e.zk.Children(e.ctx, e.layout.StagingService("a"))
		return err == nil && len(names) == 2 && len(e.failures("a")) == 1
	})
	// A negative assertion needs a window: for 2 s, nobody may stop for v2.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if vs := e.versions("a"); len(vs) != 3 || count(vs, "v2") != 0 {
			t.Fatalf("a node stopped before the version was distributed: %v", vs)
		}
		time.Sleep(50 * time.Millisecond) // observation interval
	}
	gate.open.Store(true)
	e.waitFor("all on v2", 2*time.Minute, func() bool { return allOn(e.versions("a"), 3, "v2") && len(e.deployQueue()) == 0 })
}

// The staged version is pre-warmed and pinned: fully resident (mincore) and still resident
// after the kernel is asked to drop it, with the pinned bytes reported in the staging entry.
func TestStagedVersionPinnedInPageCache(t *testing.T) {
	e := newEnv(t)
	e.pinner = pagecache.New(64<<20, testr.New(t))
	t.Cleanup(func() { _ = e.pinner.Close() })
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(2)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), 2, "v1") && len(e.deployQueue()) == 0 })

	// A 4 MiB v2 that stays staged: the plan is paused.
	e.bodies["a-v2"] = bytes.Repeat([]byte("rollkeeper page cache "), 4<<20/22)
	e.paused = true
	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	var staged zklayout.Staged
	e.waitFor("both nodes staged with pinned bytes", time.Minute, func() bool {
		names, _, err := e.zk.Children(e.ctx, e.layout.StagingService("a"))
		if err != nil || len(names) != 2 {
			return false
		}
		for _, n := range names {
			data, _, err := e.zk.Get(e.ctx, e.layout.StagingChild("a", n))
			if err != nil || zklayout.Decode(data, &staged) != nil || staged.PinnedBytes == 0 {
				return false
			}
		}
		return true
	})
	files, _ := filepath.Glob(filepath.Join(e.stateDirs["node-01"], "a", "versions", "v2", "*"))
	if len(files) != 1 {
		t.Fatalf("staged files: %v", files)
	}
	if err := pagecache.Drop(files[0]); err != nil {
		t.Fatal(err)
	}
	resident, total, err := pagecache.Resident(files[0])
	must(t, err)
	t.Logf("staged v2: %d of %d bytes resident after DONTNEED; %d bytes pinned on the node", resident, total, staged.PinnedBytes)
	if resident != total {
		t.Fatalf("pinned staged version was evicted: %d of %d bytes resident", resident, total)
	}
}

// A catch-up entry (the operator queued a service again for nodes that fell behind after its
// rollout, its dependencies complete) lets those nodes upgrade behind another service that
// heads the deploy queue and never completes (one halted by a failure, say); a plain entry
// there waits its turn. Chaos seed 8: a node cut off during a's rollout came back on the old
// version after b had failed, and a's requeued entry sat behind b's for good.
func TestCatchUpEntryPassesTheQueueHead(t *testing.T) {
	const nodes = 2
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all nodes online on v1", time.Minute, func() bool {
		return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0
	})
	e.create(e.layout.DeployPrefix("x"), encode(t, &zklayout.DeployEntry{Deploy: "test", Service: "x", Version: "v1"}), zkclient.PersistentSequential)
	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil) // a plain entry behind x's
	e.waitFor("both nodes staged v2", time.Minute, func() bool {
		children, _, err := e.zk.Children(e.ctx, e.layout.StagingService("a"))
		must(t, err)
		return len(children) == nodes
	})
	if vs := e.versions("a"); !allOn(vs, nodes, "v1") {
		t.Fatalf("a plain entry behind another service's let nodes upgrade: %v", vs)
	}
	e.create(e.layout.DeployPrefix("a"), encode(t, &zklayout.DeployEntry{Deploy: "test", Service: "a", Version: "v2", CatchUp: true}),
		zkclient.PersistentSequential)
	e.waitFor("both nodes on v2, a's entries gone, x's left", time.Minute, func() bool {
		q := e.deployQueue()
		return allOn(e.versions("a"), nodes, "v2") && len(q) == 1 && strings.HasPrefix(q[0], "x-")
	})
}
