package nodeagent_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
)

// A decision of rollout.MaxAdmit nodes with names as long as Kubernetes allows does not fit one
// request of the agents' send buffer: the decider admits the prefix that fits, in one
// transaction, and the others stay queued and registered.
func TestDecisionFitsOneTransaction(t *testing.T) {
	e := newEnv(t)
	const svc = "web"
	lay := e.layout
	for _, p := range []string{lay.CurrentService(svc), lay.FailureService(svc), lay.StagingService(svc)} {
		must(t, e.zk.EnsurePath(e.ctx, p))
	}
	// 253 characters, the most a DNS-1123 subdomain (a Kubernetes node name) may have.
	long := func(i int) string {
		l := strings.Repeat("x", 59)
		return fmt.Sprintf("n%03d.%s.%s.%s.%s", i, l+"aaaa", l+"bbbb", l+"cccc", l[:56])
	}
	var admit []rollout.Admitted
	for i := range rollout.MaxAdmit {
		n := long(i)
		must(t, zklayout.ValidNode(n))
		staged, err := zklayout.Encode(&zklayout.Staged{Node: n, Version: "v2", State: zklayout.StagedReady, Since: time.Now().UTC()})
		must(t, err)
		c, err := e.zk.Create(e.ctx, lay.StagingPrefix(svc, n), staged, zkclient.PersistentSequential)
		must(t, err)
		reg, err := zklayout.Encode(&zklayout.Current{Node: n, Version: "v1", Health: zklayout.HealthHealthy, Since: time.Now().UTC()})
		must(t, err)
		_, err = e.zk.Create(e.ctx, lay.CurrentNode(svc, n), reg, zkclient.Persistent)
		must(t, err)
		admit = append(admit, rollout.Admitted{Node: n, Child: filepath.Base(c)})
	}
	st, err := store.New(t.TempDir(), fetch.NewHTTP())
	must(t, err)
	a, err := nodeagent.New(nodeagent.Config{Node: admit[0].Node, Layout: lay, ZK: dial(t, e.ctx, logr.Discard()),
		Backend: backend.NewMemory(), Store: st, Logger: logr.Discard(), Metrics: nodeagent.NewMetrics()})
	must(t, err)

	k, err := nodeagent.Decide(e.ctx, a, svc, rollout.Step{Kind: rollout.StepDecide, Version: "v2", Child: admit[0].Child}, admit, 7)
	if err != nil {
		t.Fatalf("decision of %d long-named nodes: %v", len(admit), err)
	}
	if k < 2 || k >= len(admit) {
		t.Fatalf("admitted %d of %d, want a cut prefix", k, len(admit))
	}
	regs, _, err := e.zk.Children(e.ctx, lay.CurrentService(svc))
	must(t, err)
	if len(regs) != len(admit)-k {
		t.Errorf("%d registrations left, want %d (the nodes not admitted)", len(regs), len(admit)-k)
	}
	for i, want := range map[int]string{0: zklayout.StagedUpgrading, k - 1: zklayout.StagedUpgrading, k: zklayout.StagedReady} {
		data, _, err := e.zk.Get(e.ctx, lay.StagingChild(svc, admit[i].Child))
		must(t, err)
		var s zklayout.Staged
		must(t, zklayout.Decode(data, &s))
		if s.State != want {
			t.Errorf("node %d of %d: %s, want %s", i, k, s.State, want)
		}
	}
	t.Logf("admitted %d of %d nodes with %d-character names", k, len(admit), len(admit[0].Node))
}
