package nodeagent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
)

// only keeps the entries of vs whose node is among names.
func only(vs map[string]string, names ...string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		if v, ok := vs[n]; ok {
			out[n] = v
		}
	}
	return out
}

func nodeNames(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("node-%02d", i))
	}
	return out
}

// dropDeployEntries deletes svc's deploy queue entries (as when its RollingDeploy goes), so
// that it holds no other service back.
func (e *env) dropDeployEntries(svc string) {
	for _, c := range e.deployQueue() {
		if s, err := zklayout.ParseSeq(c); err == nil && s.Name == svc {
			must(e.t, e.zk.Delete(e.ctx, e.layout.DeployEntry(c), -1))
		}
	}
}

func (e *env) create(p string, data []byte, mode zkclient.Mode) string {
	e.t.Helper()
	created, err := e.zk.Create(e.ctx, p, data, mode)
	must(e.t, err)
	return created
}

func encode(t *testing.T, p zklayout.Payload) []byte {
	t.Helper()
	b, err := zklayout.Encode(p)
	must(t, err)
	return b
}

// The scenario: quorum 5 of 6, and stray children under current/a/ — garbage bytes, a
// "schema": 999 payload, a payload naming another node, a registration of a node the
// selector excludes, a name that is no node name. None counts as online, so the number of
// nodes really running the service never drops below 5 while it rolls; a malformed
// registration under a real node's name is replaced by that node's agent.
func TestStrayRegistrationsNeverCountTowardsQuorum(t *testing.T) {
	const nodes, minAvailable = 6, 5
	e := newEnv(t)
	e.selector = "role=web"
	e.labels = map[string]string{"role": "web"}
	// The gate counts staged nodes only, so the quorum check alone stands between the strays and
	// an outage.
	gate := nodes
	e.minStaged = &gate
	real := nodeNames(nodes)
	e.publish("a", "v1", "", minAvailable, zklayout.FailurePolicyPause, nil)
	must(t, e.zk.EnsurePath(e.ctx, e.layout.CurrentService("a")))
	// node-06's own part of the tree, garbage before its agent starts (a persistent znode).
	e.create(e.layout.CurrentNode("a", "node-06"), []byte("garbage"), zkclient.Persistent)
	e.startAgents(nodes)
	e.waitFor("all real nodes online on v1", time.Minute, func() bool {
		return allOn(only(e.versions("a"), real...), nodes, "v1") && len(e.deployQueue()) == 0
	})

	now := time.Now().UTC()
	e.create(e.layout.CurrentNode("a", "node-07"), []byte{0xff, 0x00, 'x', '{'}, zkclient.Persistent)
	e.create(e.layout.CurrentNode("a", "node-08"),
		[]byte(`{"schema":999,"node":"node-08","version":"v1","health":"healthy","labels":{"role":"web"}}`), zkclient.Persistent)
	e.create(e.layout.CurrentNode("a", "node-09"), encode(t, &zklayout.Current{Node: "node-01", Version: "v1",
		Health: zklayout.HealthHealthy, Since: now, Labels: map[string]string{"role": "web"}}), zkclient.Persistent)
	e.create(e.layout.CurrentNode("a", "node-10"), encode(t, &zklayout.Current{Node: "node-10", Version: "v1",
		Health: zklayout.HealthHealthy, Since: now, Labels: map[string]string{"role": "db"}}), zkclient.Ephemeral)
	e.create(e.layout.CurrentNode("a", "Not_A_Node"), encode(t, &zklayout.Current{Node: "node-11", Version: "v1",
		Health: zklayout.HealthHealthy, Since: now, Labels: map[string]string{"role": "web"}}), zkclient.Persistent)

	e.av.arm()
	e.publish("a", "v2", "v1", minAvailable, zklayout.FailurePolicyPause, nil)
	e.waitFor("all real nodes online on v2", 2*time.Minute, func() bool { return allOn(only(e.versions("a"), real...), nodes, "v2") })
	if got := e.av.min("a"); got < minAvailable {
		t.Fatalf("quorum violated by stray registrations: only %d nodes ran the service at one point (minAvailable %d)", got, minAvailable)
	}
	t.Logf("lowest number of running nodes during the rollout: %d (minAvailable %d)", e.av.min("a"), minAvailable)
	// Strays on v1 do not keep the service from completing either.
	e.waitFor("the deploy entry removed", time.Minute, func() bool { return len(e.deployQueue()) == 0 })
	data, st, err := e.zk.Get(e.ctx, e.layout.CurrentNode("a", "node-06"))
	must(t, err)
	var c zklayout.Current
	if err := zklayout.Decode(data, &c); err != nil || st.EphemeralOwner == 0 || c.Labels["role"] != "web" {
		t.Fatalf("node-06's registration was not repaired: %q (owner %x)", data, st.EphemeralOwner)
	}
}

// Stray staging children block no queue: a persistent garbage child at the head of the queue
// (no agent made it) is skipped, a child that is not <node>-<counter> is ignored, and a
// malformed child under a node's own name is removed by that node's agent.
func TestStrayStagingChildrenDoNotBlock(t *testing.T) {
	const nodes = 3
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0 })

	stray := e.create(e.layout.StagingPrefix("a", "node-99"), []byte("garbage"), zkclient.PersistentSequential)
	e.create(e.layout.StagingChild("a", "junk"), []byte(`{"schema":999}`), zkclient.Persistent)
	own := e.create(e.layout.StagingPrefix("a", "node-01"), []byte(`{"schema":999}`), zkclient.PersistentSequential)
	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.waitFor("all on v2 and the deploy entry removed", time.Minute, func() bool {
		return allOn(e.versions("a"), nodes, "v2") && len(e.deployQueue()) == 0
	})
	if ok, err := e.zk.Exists(e.ctx, own); err != nil || ok {
		t.Fatalf("node-01's malformed staging child %s is still there (err %v)", own, err)
	}
	// Not the agents' to remove: the operator repairs the rest of the tree.
	if ok, err := e.zk.Exists(e.ctx, stray); err != nil || !ok {
		t.Fatalf("another node's stray staging child %s was touched (exists %v, err %v)", stray, ok, err)
	}
}

// panicky panics in Status for one service while armed: an agent bug, injected.
type panicky struct {
	backend.Backend
	svc   string
	armed *atomic.Bool
}

func (p panicky) Status(svc string) backend.Status {
	if svc == p.svc && p.armed.Load() {
		panic("injected: backend status of " + svc)
	}
	return p.Backend.Status(svc)
}

// A panic in one service's step is recovered: it is counted, recorded as an AgentError failure
// naming the service and the znode, and retried; the node's other service rolls meanwhile. Once
// the step stops panicking the service comes up and the failure is cleared.
func TestStepPanicIsContained(t *testing.T) {
	const nodes = 2
	e := newEnv(t)
	var armed atomic.Bool
	armed.Store(true)
	e.wrapBackend = func(_ string, b backend.Backend) backend.Backend { return panicky{Backend: b, svc: "b", armed: &armed} }
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.publish("b", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.dropDeployEntries("b") // b never completes while it panics; it must not hold a back
	e.startAgents(nodes)
	e.waitFor("a on v1 and b's panics recorded on every node", time.Minute, func() bool {
		return allOn(e.versions("a"), nodes, "v1") && len(e.failures("b")) == nodes
	})
	for n, f := range e.failures("b") {
		if f.Kind != zklayout.FailureAgent || f.Version != "v1" || !strings.Contains(f.Reason, "service b") ||
			!strings.Contains(f.Reason, e.layout.CurrentNode("b", n)) || !strings.Contains(f.Reason, "injected") {
			t.Fatalf("failure of %s = %+v, want an AgentError naming service b and its znode", n, f)
		}
	}
	for _, a := range e.agents {
		if got := agentSeries(t, a.m)[nodeagent.MetricStepPanics+"{service=b}"]; got < 1 {
			t.Fatalf("%s: %s{service=b} = %v", a.name, nodeagent.MetricStepPanics, got)
		}
	}
	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.waitFor("a on v2 while b still panics", time.Minute, func() bool {
		return allOn(e.versions("a"), nodes, "v2") && len(e.deployQueue()) == 0
	})
	if len(e.versions("b")) != 0 {
		t.Fatalf("b registered while its step panicked: %v", e.versions("b"))
	}
	armed.Store(false)
	e.waitFor("b online and its AgentError failures cleared", time.Minute, func() bool {
		return allOn(e.versions("b"), nodes, "v1") && len(e.failures("b")) == 0
	})
}

// hangingFetcher never finishes fetching svc's version (an artifact nobody can share): it
// waits for its context.
type hangingFetcher struct {
	svc, version      string
	started, inFlight atomic.Int32
	// canceled counts the hangs ended by a cancel rather than a deadline.
	canceled atomic.Int32
	next     fetch.Fetcher
}

func (h *hangingFetcher) Fetch(ctx context.Context, rel *zklayout.Release, dest string) error {
	if rel.Service != h.svc || rel.Version != h.version {
		return h.next.Fetch(ctx, rel, dest)
	}
	h.started.Add(1)
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		h.canceled.Add(1)
	}
	return fmt.Errorf("no peer has %s/%s: %w", rel.Service, rel.Version, ctx.Err())
}

// A fetch that never finishes for service x holds back neither y's fetch nor y's upgrade on
// the same agents, and x's fetch is abandoned at the fetch timeout with an Artifact failure.
func TestHangingFetchDoesNotStallOtherServices(t *testing.T) {
	const nodes = 2
	e := newEnv(t)
	// Long enough for y's whole rollout on a slow machine, so y finishing while x's fetches are
	// still in flight shows they never waited for them.
	e.fetchTimeout = 15 * time.Second
	h := &hangingFetcher{svc: "x", version: "v2", next: fetch.NewHTTP()}
	e.fetcherFor = func(string) fetch.Fetcher { return h }
	e.publish("x", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.publish("y", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("x and y on v1", time.Minute, func() bool {
		return allOn(e.versions("x"), nodes, "v1") && allOn(e.versions("y"), nodes, "v1") && len(e.deployQueue()) == 0
	})

	e.publish("x", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.waitFor("x's fetches hanging on every node", time.Minute, func() bool { return h.inFlight.Load() == nodes })
	e.dropDeployEntries("x")
	e.publish("y", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.waitFor("y on v2", time.Minute, func() bool { return allOn(e.versions("y"), nodes, "v2") && len(e.deployQueue()) == 0 })
	if n, started := h.inFlight.Load(), h.started.Load(); n != nodes || started != nodes {
		t.Fatalf("y finished after x's fetches ended (%d in flight, %d started): it waited for them", n, started)
	}
	e.waitFor("x's fetches abandoned with Artifact failures", time.Minute, func() bool {
		fs := e.failures("x")
		if len(fs) != nodes {
			return false
		}
		for _, f := range fs {
			if f.Kind != zklayout.FailureArtifact || f.Version != "v2" || !strings.Contains(f.Reason, "fetch timeout") {
				return false
			}
		}
		return true
	})
	if !allOn(e.versions("x"), nodes, "v1") {
		t.Fatalf("x versions after abandoned fetches: %v", e.versions("x"))
	}
	// A new plan ends the retried, hanging fetches at once (not at their deadline) and rolls.
	e.waitFor("x's fetches retried", time.Minute, func() bool { return h.inFlight.Load() == nodes })
	if h.canceled.Load() != 0 {
		t.Fatalf("%d fetches canceled before the plan changed", h.canceled.Load())
	}
	e.publish("x", "v3", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.waitFor("x on v3 and its failures cleared", time.Minute, func() bool {
		return allOn(e.versions("x"), nodes, "v3") && len(e.failures("x")) == 0 && len(e.deployQueue()) == 0
	})
	if n := h.canceled.Load(); n != nodes {
		t.Fatalf("%d hanging fetches ended by the plan change, want %d (the others waited for their deadline)", n, nodes)
	}
}

// The distribution gate watches current/: the gate is closed because an online node cannot
// stage the version; when that node goes away (its session ends), the waiting node proceeds
// with no other event to wake it.
func TestGateWakesWhenNodeLeaves(t *testing.T) {
	e := newEnv(t)
	gate := &gatedFetcher{next: fetch.NewHTTP()} // never opened
	e.fetcherFor = func(name string) fetch.Fetcher {
		if name == "node-03" {
			return gate
		}
		return fetch.NewHTTP()
	}
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(3)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), 3, "v1") && len(e.deployQueue()) == 0 })

	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	e.waitFor("two nodes staged and node-03's fetch failure recorded", time.Minute, func() bool {
		names, _, err := e.zk.Children(e.ctx, e.layout.StagingService("a"))
		return err == nil && len(names) == 2 && len(e.failures("a")) == 1
	})
	if vs := e.versions("a"); count(vs, "v2") != 0 {
		t.Fatalf("a node stopped with the gate closed: %v", vs)
	}
	third := e.agents[2]
	third.cancel()
	<-third.done
	third.zk.Close() // its registration goes with its session
	e.waitFor("the two remaining nodes on v2", time.Minute, func() bool {
		vs := e.versions("a")
		_, present := vs["node-03"]
		return !present && allOn(vs, 2, "v2") && len(e.deployQueue()) == 0
	})
}

// The registration cache reads only new names, yet never serves a stale entry: a name deleted
// and created again between two listings (a re-registration, a stray replaced by its node) is
// noticed through current/<svc>'s cversion and read again.
func TestRegistrationCacheSeesReplacedNames(t *testing.T) {
	e := newEnv(t)
	st, err := store.New(t.TempDir(), fetch.NewHTTP())
	must(t, err)
	a, err := nodeagent.New(nodeagent.Config{Node: "node-00", Layout: e.layout, ZK: e.zk, Backend: backend.NewMemory(), Store: st})
	must(t, err)
	online := nodeagent.OnlineCounter(a, "a")
	plan := &zklayout.Plan{Selector: "role=web"}
	reg := func(node, version, role string) []byte {
		return encode(t, &zklayout.Current{Node: node, Version: version, Health: zklayout.HealthHealthy,
			Since: time.Now().UTC(), Labels: map[string]string{"role": role}})
	}
	replace := func(name string, data []byte) {
		must(t, e.zk.Multi(e.ctx, zkclient.DeleteOp(e.layout.CurrentNode("a", name), -1),
			zkclient.CreateOp(e.layout.CurrentNode("a", name), data, zkclient.Ephemeral)))
	}
	check := func(what string, want map[string]string) {
		t.Helper()
		got, err := online(e.ctx, plan)
		must(t, err)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: online = %v, want %v", what, got, want)
		}
	}
	must(t, e.zk.EnsurePath(e.ctx, e.layout.CurrentService("a")))
	e.create(e.layout.CurrentNode("a", "node-01"), reg("node-01", "v1", "web"), zkclient.Ephemeral)
	e.create(e.layout.CurrentNode("a", "node-02"), []byte("garbage"), zkclient.Ephemeral)
	e.create(e.layout.CurrentNode("a", "node-03"), reg("node-03", "v1", "db"), zkclient.Ephemeral)
	check("first listing", map[string]string{"node-01": "v1"})
	replace("node-01", reg("node-01", "v2", "web"))
	check("node-01 re-registered on v2", map[string]string{"node-01": "v2"})
	replace("node-02", reg("node-02", "v2", "web"))
	e.create(e.layout.CurrentNode("a", "node-04"), reg("node-04", "v1", "web"), zkclient.Ephemeral)
	check("node-02 repaired, node-04 joined", map[string]string{"node-01": "v2", "node-02": "v2", "node-04": "v1"})
	must(t, e.zk.Delete(e.ctx, e.layout.CurrentNode("a", "node-04"), -1))
	check("node-04 left", map[string]string{"node-01": "v2", "node-02": "v2"})
	plan.Selector = ""
	check("no selector", map[string]string{"node-01": "v2", "node-02": "v2", "node-03": "v1"})
}

// A process left running by a previous agent (killed before its health check passed, say) is
// health-checked before the new agent registers it: while unhealthy it never counts as an
// online node, the failure is recorded, and once it passes it is registered.
func TestAdoptedProcessIsCheckedBeforeItCounts(t *testing.T) {
	e := newEnv(t)
	ready := filepath.Join(t.TempDir(), "healthy")
	hc := &zklayout.HealthCheck{Exec: &zklayout.Exec{Command: []string{"/bin/sh", "-c", "test -e " + ready}},
		TimeoutSeconds: 1, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	e.wrapBackend = func(_ string, b backend.Backend) backend.Backend {
		// What the previous agent left: v1 running, never seen healthy by this agent.
		must(t, b.Start(e.ctx, "a", backend.Spec{Version: "v1"}))
		return b
	}
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, hc)
	e.startAgents(1)
	e.waitFor("the unhealthy adopted process's failure", time.Minute, func() bool { return len(e.failures("a")) == 1 })
	for _, f := range e.failures("a") {
		if f.Kind != zklayout.FailureHealthCheck || !strings.Contains(f.Reason, "previous agent") {
			t.Fatalf("failure = %+v, want a HealthCheck failure of the adopted process", f)
		}
	}
	if vs := e.versions("a"); len(vs) != 0 {
		t.Fatalf("an unhealthy adopted process is registered: %v", vs)
	}
	must(t, os.WriteFile(ready, nil, 0o644))
	e.waitFor("the adopted process registered once healthy", time.Minute, func() bool { return allOn(e.versions("a"), 1, "v1") })
}

// A process left unhealthy mid-upgrade (the previous agent switched v1 -> v2, started v2 and
// was killed before its health check) is rolled back like a failed upgrade: v2 is stopped, v1
// started and registered, and the failure recorded halts the rollout.
func TestAdoptedUnhealthyUpgradeRollsBack(t *testing.T) {
	e := newEnv(t)
	hc := &zklayout.HealthCheck{Exec: &zklayout.Exec{Command: []string{"/bin/sh", "-c", `test "$ROLLKEEPER_VERSION" != v2`}},
		TimeoutSeconds: 1, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	e.publish("a", "v1", "", 0, zklayout.FailurePolicyPause, hc)
	e.dropDeployEntries("a")
	e.publish("a", "v2", "v1", 0, zklayout.FailurePolicyPause, hc)
	e.leftMidUpgrade()
	ta := e.startAgent("node-01")
	e.waitFor("node-01 back on v1", time.Minute, func() bool { return allOn(e.versions("a"), 1, "v1") })
	if s := ta.be.Status("a"); !s.Running || s.Version != "v1" {
		t.Fatalf("backend status %+v, want v1 running", s)
	}
	f, ok := e.failures("a")["node-01"]
	if !ok || f.Kind != zklayout.FailureHealthCheck || f.Version != "v2" {
		t.Fatalf("failures %+v, want node-01's HealthCheck failure of v2", e.failures("a"))
	}
	// The rollout is halted (Pause): node-01 stays on v1.
	if got := e.counterWith(nodeagent.MetricUpgrades, nodeagent.ResultRollback); got != 1 {
		t.Fatalf("%d rollbacks counted, want 1", got)
	}
}

// When the version a rollback returns to is unhealthy too, the node keeps reporting the plan's
// version as failed (the halt stands); the older version's failing checks do not replace it.
func TestAdoptedRollbackUnhealthyTooKeepsTheFailure(t *testing.T) {
	e := newEnv(t)
	hc := &zklayout.HealthCheck{Exec: &zklayout.Exec{Command: []string{"/bin/false"}},
		TimeoutSeconds: 1, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	e.publish("a", "v1", "", 0, zklayout.FailurePolicyPause, hc)
	e.dropDeployEntries("a")
	e.publish("a", "v2", "v1", 0, zklayout.FailurePolicyPause, hc)
	e.leftMidUpgrade()
	e.startAgent("node-01")
	// v2 adopted and failed, v1 started and failed, v1 adopted and failed (what follows a
	// check, a failure record included, is done before the worker's next check): four checks.
	e.waitFor("four failed health checks", time.Minute, func() bool {
		return e.counter(nodeagent.MetricHealthFailures) >= 4
	})
	f, ok := e.failures("a")["node-01"]
	if !ok || f.Kind != zklayout.FailureHealthCheck || f.Version != "v2" {
		t.Fatalf("failures %+v, want node-01's HealthCheck failure of v2 still there", e.failures("a"))
	}
	if vs := e.versions("a"); len(vs) != 0 {
		t.Fatalf("an unhealthy version is registered: %v", vs)
	}
}

// leftMidUpgrade makes each node start as a previous agent killed mid-upgrade of service a
// left it: v1 and v2 installed, the store switched to v2 (v1 its previous version), v2 running
// and never health-checked.
func (e *env) leftMidUpgrade() { e.leftInstalled(true, "v1", "v2") }

// leftInstalled makes each node start with service a's versions installed and switched to in
// order (the last one current), running the last one if run, or down (a rebooted machine).
func (e *env) leftInstalled(run bool, versions ...string) {
	t := e.t
	e.wrapBackend = func(name string, b backend.Backend) backend.Backend {
		st, err := store.New(e.stateDirs[name], fetch.NewHTTP())
		must(t, err)
		for _, v := range versions {
			data, _, err := e.zk.Get(e.ctx, e.layout.Release("a", v))
			must(t, err)
			var rel zklayout.Release
			must(t, zklayout.Decode(data, &rel))
			must(t, st.Ensure(e.ctx, &rel))
			must(t, st.Switch("a", v))
		}
		if run {
			must(t, b.Start(e.ctx, "a", backend.Spec{Version: versions[len(versions)-1]}))
		}
		return b
	}
}

// A machine back from a reboot while none of its peers is online starts the version installed
// there, not the plan's target: started ahead of its turn, the target could run before the
// services it depends on completed (the simulation's finding, internal/sim). The rollout
// upgrades it in turn; here the plan is paused, so it stays on v1.
func TestLoneReturningNodeStartsItsInstalledVersion(t *testing.T) {
	e := newEnv(t)
	e.publish("a", "v1", "", 0, zklayout.FailurePolicyPause, nil)
	e.dropDeployEntries("a")
	e.publish("a", "v2", "v1", 0, zklayout.FailurePolicyPause, nil)
	e.pausePlan("a")
	e.leftInstalled(false, "v1")
	ta := e.startAgent("node-01")
	e.waitFor("node-01 online", time.Minute, func() bool { return len(e.versions("a")) == 1 })
	if vs := e.versions("a"); vs["node-01"] != "v1" {
		t.Fatalf("registrations %v, want node-01 on its installed v1", vs)
	}
	if s := ta.be.Status("a"); !s.Running || s.Version != "v1" {
		t.Fatalf("backend status %+v, want v1 running", s)
	}
}
