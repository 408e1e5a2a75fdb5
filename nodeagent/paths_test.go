package nodeagent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
)

// logBuffer collects an agent's log lines, so a test can check what the agent reported.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) add(prefix, args string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, prefix+" "+args)
}

// matching returns the lines that contain every one of subs.
func (b *logBuffer) matching(subs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range b.lines {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// startLoggedAgent starts an agent for node with its store at storeDir and its log collected.
func (e *env) startLoggedAgent(node, storeDir string) (*logBuffer, *store.Store) {
	t := e.t
	logs := &logBuffer{}
	log := funcr.New(logs.add, funcr.Options{Verbosity: 1})
	zk := dial(t, e.ctx, log)
	st, err := store.New(storeDir, fetch.NewHTTP())
	must(t, err)
	a, err := nodeagent.New(nodeagent.Config{Node: node, Address: "127.0.0.1", Layout: e.layout, ZK: zk,
		Backend: backend.NewMemory(), Store: st, Logger: log, RetryInterval: 50 * time.Millisecond, MaxRetryInterval: time.Second})
	must(t, err)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return logs, st
}

// The scenario: other nodes' current registrations (written raw into ZooKeeper)
// carry version "../../../x", and so does a failure record. Two such registrations would
// outvote the plan's version as the most popular one a fresh node starts. The fresh node
// neither follows them nor builds a znode or file path from them: it starts the plan's v1,
// reports each registration as not counting, records no failure and nothing escapes its store.
func TestTraversalVersionInRegistrationIsNotFollowed(t *testing.T) {
	const bad = "../../../x"
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	must(t, e.zk.EnsurePath(e.ctx, e.layout.CurrentService("a")))
	must(t, e.zk.EnsurePath(e.ctx, e.layout.FailureService("a")))
	since := time.Now().UTC().Format(time.RFC3339)
	for _, n := range []string{"node-02", "node-03"} {
		e.create(e.layout.CurrentNode("a", n),
			[]byte(fmt.Sprintf(`{"schema":1,"node":%q,"version":%q,"health":"healthy","since":%q}`, n, bad, since)), zkclient.Persistent)
	}
	e.create(e.layout.Failure("a", "node-02"),
		[]byte(fmt.Sprintf(`{"schema":1,"node":"node-02","version":%q,"kind":"HealthCheck","reason":"x","time":%q}`, bad, since)), zkclient.Persistent)

	// Where the version would lead from the store's versions/ directory: were it followed,
	// Has would find this directory and Switch would point current at it.
	parent := t.TempDir()
	storeDir := filepath.Join(parent, "state", "store")
	escaped := filepath.Join(storeDir, "a", "versions", bad)
	must(t, os.MkdirAll(escaped, 0o755))
	if !strings.HasPrefix(escaped, parent) {
		t.Fatalf("test setup: %s is outside %s", escaped, parent)
	}

	logs, st := e.startLoggedAgent("node-01", storeDir)
	e.waitFor("node-01 online", time.Minute, func() bool { return e.versions("a")["node-01"] != "" })
	if v := e.versions("a")["node-01"]; v != "v1" {
		t.Fatalf("node-01 started %q, want the plan's v1 (the registrations carrying %q do not count)", v, bad)
	}
	// online() reports a registration before the start decision that ignored it.
	for _, n := range []string{"node-02", "node-03"} {
		if got := logs.matching("registration does not count as an online node", e.layout.CurrentNode("a", n), "malformed"); len(got) == 0 {
			t.Errorf("the agent did not report %s's registration as malformed; its log:\n%s", n, strings.Join(logs.matching(""), "\n"))
		}
	}
	if st.Current("a") != "v1" {
		t.Errorf("current link names %q, want v1", st.Current("a"))
	}
	entries, err := os.ReadDir(filepath.Join(storeDir, "a", "versions"))
	must(t, err)
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	if !slices.Equal(names, []string{"v1"}) {
		t.Errorf("installed versions %v, want [v1]", names)
	}
	if left, err := os.ReadDir(escaped); err != nil || len(left) != 0 {
		t.Errorf("the directory the version leads to was touched: %v entries, %v", len(left), err)
	}
	// No failure recorded (an AgentError would mean a panic, an Artifact failure a fetch of the
	// bad version): only the raw record is there.
	failures, _, err := e.zk.Children(e.ctx, e.layout.FailureService("a"))
	must(t, err)
	if !slices.Equal(failures, []string{"node-02"}) {
		t.Errorf("failures/a holds %v, want only the raw [node-02]", failures)
	}
	if got := logs.matching("panic"); len(got) > 0 {
		t.Errorf("the agent panicked: %v", got)
	}
}

// A release whose payload names another version than its znode (releases/a/v1 saying v2) is
// refused before anything is fetched: the store installs under the payload's names, so it
// would have installed v2 where the switch to v1 never looks.
func TestReleaseNamingAnotherVersionIsRefused(t *testing.T) {
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	data, _, err := e.zk.Get(e.ctx, e.layout.Release("a", "v1"))
	must(t, err)
	var rel zklayout.Release
	must(t, zklayout.Decode(data, &rel))
	rel.Version = "v2"
	_, err = e.zk.Set(e.ctx, e.layout.Release("a", "v1"), encode(t, &rel), -1)
	must(t, err)

	storeDir := filepath.Join(t.TempDir(), "store")
	logs, st := e.startLoggedAgent("node-01", storeDir)
	e.waitFor("the agent to report the mismatch", time.Minute, func() bool {
		return len(logs.matching("release a/v1", "the payload is for a/v2")) > 0
	})
	// Each step fails at the same check, before any fetch: nothing is ever installed.
	if st.Has("a", "v2") || st.Has("a", "v1") || st.Current("a") != "" {
		t.Fatalf("installed despite the mismatch: v1 %v, v2 %v, current %q", st.Has("a", "v1"), st.Has("a", "v2"), st.Current("a"))
	}
	if v, ok := e.versions("a")["node-01"]; ok {
		t.Fatalf("node-01 registered on %s", v)
	}
}
