package nodeagent_test

import (
	"context"
	"path"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// getHook runs before once, just before the first Get of path (then reads through).
type getHook struct {
	rollout.Client
	path   string
	before func()
}

func (h *getHook) Get(ctx context.Context, p string) ([]byte, zkclient.Stat, error) {
	if p == h.path && h.before != nil {
		h.before()
		h.before = nil
	}
	return h.Client.Get(ctx, p)
}

// TestFirstWaiterReadsBatchBeforeRegistrations plays the agent's read → Next loop for a first
// waiter on a real ZooKeeper: n0, n1 and n2 were admitted together (3 of 5 down, minAvailable
// 2), n0 is back, and n1 and n2 come back while n3 reads, just before it reads n1's staging
// child. Read before the registrations (as the protocol orders every read), they are then out
// of the queue and online: n3 goes with n4. Read after them (as a first version did), they
// looked neither in flight nor online, and n3 went alone (internal/rollout's
// TestReadBatchBeforeRegistrations is the same over the model).
func TestFirstWaiterReadsBatchBeforeRegistrations(t *testing.T) {
	e := newEnv(t)
	const svc = "a"
	e.publish(svc, "v2", "v1", 2, zklayout.FailurePolicyPause, nil)
	must(t, e.zk.EnsurePath(e.ctx, e.layout.CurrentService(svc)))
	must(t, e.zk.EnsurePath(e.ctx, e.layout.FailureService(svc)))
	nodes := []string{"n0", "n1", "n2", "n3", "n4"}
	sess, child := map[string]*zkclient.Client{}, map[string]string{}
	for _, n := range nodes {
		sess[n] = dial(t, e.ctx, logr.Discard())
		reg, err := zklayout.Encode(&zklayout.Current{Node: n, Version: "v1", Health: zklayout.HealthHealthy, Since: time.Now().UTC()})
		must(t, err)
		_, err = sess[n].Create(e.ctx, e.layout.CurrentNode(svc, n), reg, zkclient.Ephemeral)
		must(t, err)
		staged, err := zklayout.Encode(&zklayout.Staged{Node: n, Version: "v2", State: zklayout.StagedReady, Since: time.Now().UTC()})
		must(t, err)
		c, err := sess[n].Create(e.ctx, e.layout.StagingPrefix(svc, n), staged, zkclient.EphemeralSequential)
		must(t, err)
		child[n] = path.Base(c)
	}
	// The decision that took n0, n1 and n2 down, as an agent writes it.
	var admit []rollout.Admitted
	for _, n := range nodes[:3] {
		admit = append(admit, rollout.Admitted{Node: n, Child: child[n], ChildVersion: 0})
	}
	marks, err := rollout.Marks("n0", "v2", admit, 1, time.Now().UTC())
	must(t, err)
	var ops []zkclient.Op
	for _, m := range marks {
		ops = append(ops, zkclient.SetOp(e.layout.StagingChild(svc, m.Child), m.Data, m.ChildVersion),
			zkclient.DeleteOp(e.layout.CurrentNode(svc, m.Node), -1))
	}
	must(t, e.zk.Multi(e.ctx, ops...))
	// An upgrade's end, as an agent writes it: registered on v2 and out of the queue at once.
	finish := func(n string) {
		t.Helper()
		reg, err := zklayout.Encode(&zklayout.Current{Node: n, Version: "v2", Health: zklayout.HealthHealthy, Since: time.Now().UTC()})
		must(t, err)
		must(t, sess[n].Multi(e.ctx, zkclient.CreateOp(e.layout.CurrentNode(svc, n), reg, zkclient.Ephemeral),
			zkclient.DeleteOp(e.layout.StagingChild(svc, child[n]), -1)))
	}
	finish("n0")

	hook := &getHook{Client: sess["n3"], path: e.layout.StagingChild(svc, child["n1"]), before: func() { finish("n1"); finish("n2") }}
	r := rollout.NewReader(hook, e.layout, svc, "n3", nil)
	local := rollout.Local{Node: "n3", Session: sess["n3"].Session().ID, Running: true, Version: "v1", Checked: "v1", Current: "v1",
		Installed: func(v string) bool { return v == "v1" || v == "v2" }}
	// The agent's loop (nodeagent/step.go): read with what the last step used, Next, read
	// more while it asks; a StepAgain reads afresh.
	var st rollout.Step
	var need rollout.Need
	for steps := 0; steps == 0 || st.Kind == rollout.StepAgain; steps++ {
		if steps == 4 {
			t.Fatalf("still reading again after %d steps: %s", steps, st.Reason)
		}
		snap, err := r.Read(e.ctx, need)
		must(t, err)
		st = rollout.Next(snap, local)
		for tries := 0; st.Kind == rollout.StepRead; tries++ {
			if tries == 3 {
				t.Fatalf("Next keeps asking for more: %s", st.Reason)
			}
			must(t, r.ReadMore(e.ctx, snap, st.Need))
			st = rollout.Next(snap, local)
		}
		need = st.Used
	}
	var got []string
	for _, a := range st.Admit {
		got = append(got, a.Node)
	}
	if st.Kind != rollout.StepDecide || !slices.Equal(got, []string{"n3", "n4"}) {
		t.Errorf("Next = %v %q admitting %v; want a decision admitting [n3 n4]", st.Kind, st.Reason, got)
	}
	if hook.before != nil {
		t.Error("n1's staging child was never read")
	}
}
