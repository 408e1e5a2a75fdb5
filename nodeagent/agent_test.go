package nodeagent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zkguard"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/pagecache"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

var zkConnect string

// envs numbers the test environments, so each has a root of its own even when a test runs
// more than once (-count, -test.failfast reruns): a run never sees an earlier run's znodes.
var envs atomic.Int64

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nodeagent-zk-")
	if err != nil {
		panic(err)
	}
	e, err := zkserver.Start(context.Background(), dir, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	zkConnect = e.Connect()
	code := m.Run()
	e.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// countingBackend wraps Memory and tracks how many nodes actually run each service, recording
// the lowest count seen once the rollout began: the ground truth for the quorum invariant.
type availability struct {
	mu      sync.Mutex
	running map[string]int
	minSeen map[string]int
	armed   bool
}

func newAvailability() *availability {
	return &availability{running: map[string]int{}, minSeen: map[string]int{}}
}

func (a *availability) arm() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = true
	for s, n := range a.running {
		a.minSeen[s] = n
	}
}

func (a *availability) min(svc string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.minSeen[svc]
}

type countingBackend struct {
	*backend.Memory
	av *availability
	// startup is how long a start takes (simulated work), so upgrades overlap.
	startup time.Duration
}

func (c countingBackend) Start(ctx context.Context, svc string, spec backend.Spec) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.startup):
	}
	if err := c.Memory.Start(ctx, svc, spec); err != nil {
		return err
	}
	c.av.mu.Lock()
	c.av.running[svc]++
	c.av.mu.Unlock()
	return nil
}

func (c countingBackend) Stop(ctx context.Context, svc string) error {
	was := c.Memory.Status(svc).Running
	if err := c.Memory.Stop(ctx, svc); err != nil || !was {
		return err
	}
	c.av.mu.Lock()
	c.av.running[svc]--
	if n := c.av.running[svc]; c.av.armed && n < c.av.minSeen[svc] {
		c.av.minSeen[svc] = n
	}
	c.av.mu.Unlock()
	return nil
}

type env struct {
	t      *testing.T
	ctx    context.Context
	layout zklayout.Layout
	zk     *zkclient.Client // the test's own session, standing in for the operator
	srv    *httptest.Server
	files  map[string][]byte
	av     *availability
	agents []*testAgent
	// fetcherFor picks a node's fetcher (default: HTTP); minStaged goes into published plans.
	fetcherFor func(node string) fetch.Fetcher
	minStaged  *int
	// pinner is shared by the agents (one machine); bodies overrides artifact contents by
	// "<svc>-<version>"; paused publishes paused plans; stateDirs are the agents' stores.
	pinner    *pagecache.Pinner
	bodies    map[string][]byte
	paused    bool
	stateDirs map[string]string
	// selector goes into published plans and labels are every agent's node labels; fetchTimeout
	// is the agents' (0: default); wrapBackend, if set, wraps a node's backend (fault injection).
	selector     string
	labels       map[string]string
	fetchTimeout time.Duration
	wrapBackend  func(node string, b backend.Backend) backend.Backend
	// auth, if set, is the digest credentials of the test's session and the agents', which then
	// run with an ACL guard (guards holds them by node).
	auth   string
	guards map[string]*zkguard.Guard
	// signer, if set, signs what publish writes, and the agents trust only its key.
	signer *zksign.Signer
	// noEntry makes publish write no deploy entry (the test queues one itself).
	noEntry bool
}

// encode encodes p for the znode at path, signed with e.signer if set (as the operator does).
func (e *env) encode(path string, p zklayout.Payload) []byte {
	data, err := e.signer.Encode(path, p)
	must(e.t, err)
	return data
}

type testAgent struct {
	name   string
	zk     *zkclient.Client
	be     countingBackend
	m      *nodeagent.Metrics
	cancel context.CancelFunc
	done   chan struct{}
}

func newEnv(t *testing.T) *env { t.Helper(); return newEnvWith(t, "") }

// newEnvWith is newEnv with digest credentials for every session (see env.auth).
func newEnvWith(t *testing.T, auth string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	root := fmt.Sprintf("/%s-%d", strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name())), envs.Add(1))
	e := &env{t: t, ctx: ctx, layout: zklayout.MustNew(root), files: map[string][]byte{}, av: newAvailability(),
		bodies: map[string][]byte{}, stateDirs: map[string]string{}, auth: auth, guards: map[string]*zkguard.Guard{}}
	e.zk = dialAuth(t, ctx, testr.New(t), auth)
	for _, p := range e.layout.Bases() {
		must(t, e.zk.EnsurePath(ctx, p))
	}
	var mu sync.Mutex
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b, ok := e.files[r.URL.Path]
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func dial(t *testing.T, ctx context.Context, log logr.Logger) *zkclient.Client {
	t.Helper()
	return dialAuth(t, ctx, log, "")
}

func dialAuth(t *testing.T, ctx context.Context, log logr.Logger, auth string) *zkclient.Client {
	t.Helper()
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(zkConnect), SessionTimeout: 4 * time.Second, Auth: auth, Logger: log,
		SendBuffer: zkclient.AgentSendBuffer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// publish writes what the operator writes for one service version: release, plan, deploy entry.
func (e *env) publish(svc, version, previous string, minAvailable int, policy string, hc *zklayout.HealthCheck) {
	t := e.t
	body, ok := e.bodies[svc+"-"+version]
	if !ok {
		body = []byte("artifact " + svc + " " + version)
	}
	sum := sha256.Sum256(body)
	e.files["/"+svc+"-"+version] = body
	rel := e.encode(e.layout.Release(svc, version), &zklayout.Release{Service: svc, Version: version,
		Artifact: zklayout.Artifact{URL: e.srv.URL + "/" + svc + "-" + version, SHA256: hex.EncodeToString(sum[:]), Unpack: zklayout.UnpackNone},
		Run:      zklayout.Run{Command: []string{"/bin/true"}}, HealthCheck: hc})
	must(t, e.zk.EnsurePath(e.ctx, e.layout.ReleaseService(svc)))
	if _, err := e.zk.Create(e.ctx, e.layout.Release(svc, version), rel, zkclient.Persistent); err != nil && !errors.Is(err, zkclient.ErrNodeExists) {
		t.Fatal(err)
	}
	if !e.noEntry {
		entry := e.encode(e.layout.DeployPrefix(svc), &zklayout.DeployEntry{Deploy: "test", Service: svc, Version: version})
		_, err := e.zk.Create(e.ctx, e.layout.DeployPrefix(svc), entry, zkclient.PersistentSequential)
		must(t, err)
	}
	plan := e.encode(e.layout.StagingService(svc), &zklayout.Plan{Deploy: "test", DeployUID: "uid", Service: svc, Version: version,
		PreviousVersion: previous, MinAvailable: minAvailable, MinStaged: e.minStaged, Paused: e.paused, FailurePolicy: policy,
		Selector: e.selector})
	if _, err := e.zk.Set(e.ctx, e.layout.StagingService(svc), plan, -1); errors.Is(err, zkclient.ErrNoNode) {
		_, err = e.zk.Create(e.ctx, e.layout.StagingService(svc), plan, zkclient.Persistent)
		must(t, err)
	} else {
		must(t, err)
	}
}

func (e *env) startAgents(n int) {
	for i := 1; i <= n; i++ {
		e.startAgent(fmt.Sprintf("node-%02d", i))
	}
}

func (e *env) startAgent(name string) *testAgent {
	t := e.t
	log := logr.Discard()
	if testing.Verbose() {
		log = testr.New(t)
	}
	zk := dialAuth(t, e.ctx, log, e.auth)
	var guard *zkguard.Guard
	if e.auth != "" {
		var err error
		guard, err = zkguard.New(zk, e.layout, log)
		must(t, err)
		must(t, guard.Check(e.ctx))
		e.guards[name] = guard
	}
	var f fetch.Fetcher = fetch.NewHTTP()
	if e.fetcherFor != nil {
		f = e.fetcherFor(name)
	}
	e.stateDirs[name] = filepath.Join(t.TempDir(), name)
	st, err := store.New(e.stateDirs[name], f)
	must(t, err)
	be := countingBackend{Memory: backend.NewMemory(), av: e.av, startup: 100 * time.Millisecond}
	var b backend.Backend = be
	if e.wrapBackend != nil {
		b = e.wrapBackend(name, be)
	}
	m := nodeagent.NewMetrics()
	var trust zksign.Verifier
	if e.signer != nil {
		trust = zksign.NewKeyring(e.signer.Public())
	}
	a, err := nodeagent.New(nodeagent.Config{Node: name, Address: "127.0.0.1", Labels: e.labels, Layout: e.layout, ZK: zk,
		Backend: b, Store: st, Logger: log, Pinner: e.pinner, PinHold: time.Minute, RetryInterval: 50 * time.Millisecond, MaxRetryInterval: time.Second,
		FetchTimeout: e.fetchTimeout, Metrics: m, Guard: guard, Trust: trust})
	must(t, err)
	ctx, cancel := context.WithCancel(e.ctx)
	ta := &testAgent{name: name, zk: zk, be: be, m: m, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(ta.done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ta.done })
	e.agents = append(e.agents, ta)
	return ta
}

// versions maps registered nodes to versions.
func (e *env) versions(svc string) map[string]string {
	out := map[string]string{}
	names, _, err := e.zk.Children(e.ctx, e.layout.CurrentService(svc))
	if err != nil {
		return out
	}
	for _, n := range names {
		data, _, err := e.zk.Get(e.ctx, e.layout.CurrentNode(svc, n))
		var c zklayout.Current
		if err == nil && zklayout.Decode(data, &c) == nil {
			out[n] = c.Version
		}
	}
	return out
}

func (e *env) deployQueue() []string {
	names, _, err := e.zk.Children(e.ctx, e.layout.Deploy())
	must(e.t, err)
	return names
}

// waitFor polls cond until it holds or the deadline passes.
func (e *env) waitFor(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("context done waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allOn(vs map[string]string, n int, version string) bool {
	if len(vs) != n {
		return false
	}
	for _, v := range vs {
		if v != version {
			return false
		}
	}
	return true
}

func (e *env) watchEvents() int64 {
	var n int64
	for _, a := range e.agents {
		n += a.zk.WatchesFired()
	}
	return n
}

// counter sums a counter of the agents' metrics over every label.
func (e *env) counter(name string) int64 { return e.counterWith(name, "") }

// counterWith sums a counter of the agents' metrics over the series with a label of value
// value (every series if value is empty).
func (e *env) counterWith(name, value string) int64 {
	var n float64
	for _, a := range e.agents {
		fams, err := a.m.Registry().Gather()
		must(e.t, err)
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				match := value == ""
				for _, l := range m.GetLabel() {
					match = match || l.GetValue() == value
				}
				if match {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int64(n)
}

// TestRaceForQuorum: 20 agents race to upgrade under a quorum of 15. The number of nodes
// actually running the service never drops below 15, everyone ends on v2, the deploy entry is
// removed by the agents, and the watch events stay linear in the node count (no herd).
func TestRaceForQuorum(t *testing.T) {
	const nodes, minAvailable = 20, 15
	e := newEnv(t)
	e.publish("a", "v1", "", minAvailable, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all nodes online on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") })
	e.waitFor("v1 deploy entry removed", time.Minute, func() bool { return len(e.deployQueue()) == 0 })

	e.av.arm()
	before, roundsBefore := e.watchEvents(), e.counter(nodeagent.MetricRollCalls)
	e.publish("a", "v2", "v1", minAvailable, zklayout.FailurePolicyPause, nil)
	e.waitFor("all nodes online on v2", 2*time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v2") })
	e.waitFor("v2 deploy entry removed", time.Minute, func() bool { return len(e.deployQueue()) == 0 })
	events := e.watchEvents() - before
	rounds := e.counter(nodeagent.MetricRollCalls) - roundsBefore

	if got := e.av.min("a"); got < minAvailable {
		t.Fatalf("quorum violated: only %d nodes ran the service at one point (minAvailable %d)", got, minAvailable)
	}
	t.Logf("lowest number of running nodes during the rollout: %d (minAvailable %d)", e.av.min("a"), minAvailable)
	t.Logf("watch events during the v2 rollout: %d for %d nodes (%.1f per node), %d roll calls", events, nodes, float64(events)/nodes, rounds)
	// A decision takes down at most nodes-minAvailable nodes (itself and those it admits).
	if most := int64(nodes - minAvailable); rounds*most < nodes {
		t.Fatalf("%d roll calls for %d upgrades: a decision takes at most %d down", rounds, nodes, most)
	}
	// Every membership change waking every agent would cost about nodes*4 events per node. The
	// roll call is a deliberate broadcast: each round wakes each answerer once, and the
	// decider once per answer.
	if limit := 10*nodes + 2*rounds*nodes; events > limit {
		t.Fatalf("herd effect: %d watch events for %d nodes and %d roll calls (limit %d)", events, nodes, rounds, limit)
	}
}
