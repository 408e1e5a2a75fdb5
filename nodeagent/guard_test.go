package nodeagent_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
)

// startRecorder wraps a backend and records, for each start, whether the tree was locked then.
type startRecorder struct {
	backend.Backend
	locked *atomic.Bool
	mu     *sync.Mutex
	starts *[]string // "<version> locked|open"
}

func (r startRecorder) Start(ctx context.Context, svc string, spec backend.Spec) error {
	state := "open"
	if r.locked.Load() {
		state = "locked"
	}
	r.mu.Lock()
	*r.starts = append(*r.starts, spec.Version+" "+state)
	r.mu.Unlock()
	return r.Backend.Start(ctx, svc, spec)
}

// An agent whose guard finds the tree open acts on no plan, even one its operator wrote, and
// leaves its service running; once the tree is locked again it carries on. (The guard checks
// again on every reconnection, internal/zkguard's tests show; here the test runs the check.)
func TestOpenTreeStopsTheAgentActing(t *testing.T) {
	const auth = "rollkeeper:agent-guard"
	e := newEnvWith(t, auth)
	var (
		locked atomic.Bool
		mu     sync.Mutex
		starts []string
	)
	locked.Store(true)
	e.wrapBackend = func(node string, b backend.Backend) backend.Backend {
		return startRecorder{Backend: b, locked: &locked, mu: &mu, starts: &starts}
	}
	e.publish("web", "v1", "", 0, zklayout.FailurePolicyPause, nil)
	a := e.startAgent("node-01")
	e.waitFor("v1 online", time.Minute, func() bool { return e.versions("web")["node-01"] == "v1" })

	// Someone opens a base: the next check says so.
	admin, _, err := zk.Connect(zkclient.ParseServers(zkConnect), 10*time.Second, zk.WithLogInfo(false))
	must(t, err)
	defer admin.Close()
	must(t, admin.AddAuth("digest", []byte(auth)))
	locked.Store(false)
	_, err = admin.SetACL(e.layout.Staging(), zk.WorldACL(zk.PermAll), -1)
	must(t, err)
	g := e.guards["node-01"]
	if err := g.Check(e.ctx); err == nil {
		t.Fatal("the guard passed an open base")
	}

	// A new version is published (by the operator, or by whoever opened the tree): the agent
	// must not act on it, and keeps v1 running.
	e.publish("web", "v2", "v1", 0, zklayout.FailurePolicyPause, nil)
	if st := a.be.Status("web"); !st.Running || st.Version != "v1" {
		t.Fatalf("service after the tree opened: %+v", st)
	}

	// Locked again: the agent upgrades, and no start of v2 happened while the tree was open.
	_, err = admin.SetACL(e.layout.Staging(), []zk.ACL{{Perms: zk.PermRead, Scheme: "world", ID: "anyone"},
		{Perms: zk.PermAll, Scheme: "digest", ID: zkclient.DigestID(auth)}}, -1)
	must(t, err)
	locked.Store(true)
	must(t, g.Check(e.ctx))
	e.waitFor("v2 online", time.Minute, func() bool { return e.versions("web")["node-01"] == "v2" })
	mu.Lock()
	defer mu.Unlock()
	for _, s := range starts {
		if s == "v2 open" {
			t.Fatalf("v2 started while the tree was open: %v", starts)
		}
	}
	t.Logf("starts: %v", starts)
}
