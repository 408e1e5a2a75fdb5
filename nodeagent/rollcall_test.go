package nodeagent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
)

// A crashed machine's registration outlives it by up to the session timeout. Here node-05 and
// node-06 are such machines: valid registrations of a live session (a session of their own),
// but no agent and no service behind them. Counted, they would let a real node stop with 6
// registered and minAvailable 4, leaving 3 of the 4 real nodes running. The roll call counts
// only nodes that answer: no real node stops. With minAvailable 3 the rollout then finishes,
// one real node down at a time, while the dead machines are still registered.
func TestRollCallIgnoresDeadMachines(t *testing.T) {
	const real = 4
	e := newEnv(t)
	e.realNodesAndStaleRegistrations(real, "node-05", "node-06")

	e.av.arm()
	e.publish("a", "v2", "v1", real, zklayout.FailurePolicyPause, nil)
	e.waitFor("a roll call that too few nodes answered", time.Minute, func() bool {
		return e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultTooFew) > 0
	})
	if got := e.av.min("a"); got < real {
		t.Fatalf("a node stopped on the dead machines' registrations: %d of %d real nodes ran the service at one point (minAvailable %d)", got, real, real)
	}
	if got := e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultSuccess); got != 0 {
		t.Fatalf("%d roll calls succeeded with only %d real nodes and minAvailable %d", got, real, real)
	}

	const minAvailable = 3
	e.setMinAvailable("a", minAvailable)
	e.waitFor("the real nodes on v2", 2*time.Minute, func() bool {
		return allOn(only(e.versions("a"), "node-01", "node-02", "node-03", "node-04"), real, "v2")
	})
	if got := e.av.min("a"); got < minAvailable {
		t.Fatalf("quorum violated: %d of the real nodes ran the service at one point (minAvailable %d): a dead machine was counted", got, minAvailable)
	}
	t.Logf("lowest number of running nodes: %d (minAvailable %d); roll calls: %d succeeded, %d too few answers; %d answers",
		e.av.min("a"), minAvailable, e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultSuccess),
		e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultTooFew), e.counter(nodeagent.MetricRollCallAnswers))
}

// A restarted agent's service process runs before it is healthy, while the previous
// session's registration under the node's name still stands (until that session expires).
// Here node-05 is such a machine: its registration belongs to another live session, and its
// new agent has started the service but is still waiting for it to come up (Start does not
// return). The agent must not answer for that registration: counted, node-05 would let a real
// node stop with minAvailable 4, leaving 3 serving nodes.
func TestRollCallIgnoresUnregisteredRestart(t *testing.T) {
	const real = 4
	e := newEnv(t)
	e.realNodesAndStaleRegistrations(real, "node-05")
	started := make(chan struct{})
	e.wrapBackend = func(name string, b backend.Backend) backend.Backend {
		if name != "node-05" {
			return b
		}
		return &comingUp{Backend: b, mem: b.(countingBackend).Memory, started: started}
	}
	e.startAgent("node-05")
	select {
	case <-started:
	case <-e.ctx.Done():
		t.Fatal("node-05's agent never started the service")
	}

	e.av.arm()
	e.publish("a", "v2", "v1", real, zklayout.FailurePolicyPause, nil)
	e.waitFor("a roll call's outcome", time.Minute, func() bool {
		return e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultTooFew)+e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultSuccess) > 0
	})
	if got := e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultSuccess); got != 0 {
		t.Fatalf("%d roll calls succeeded with %d serving nodes and minAvailable %d: the restarted agent answered", got, real, real)
	}
	if got := e.av.min("a"); got < real {
		t.Fatalf("a node stopped on the restarted agent's answer: %d of %d serving nodes at one point (minAvailable %d)", got, real, real)
	}
}

// comingUp is a backend whose service a starts (it shows as running) but never comes up:
// Start waits until the agent gives up.
type comingUp struct {
	backend.Backend
	mem     *backend.Memory
	started chan struct{}
	once    sync.Once
}

func (c *comingUp) Start(ctx context.Context, svc string, spec backend.Spec) error {
	if svc != "a" {
		return c.Backend.Start(ctx, svc, spec)
	}
	if err := c.mem.Start(ctx, svc, spec); err != nil {
		return err
	}
	c.once.Do(func() { close(c.started) })
	<-ctx.Done()
	return ctx.Err()
}

// Answers are parsed from child names anyone could write: foreign children prove nothing, an
// answer to an older round does not count, and each node counts once.
func TestCountAnswers(t *testing.T) {
	registered := map[string]string{"node-1": "v1", "node-2": "v1", "node-3": "v1", "self": "v1"}
	children := []string{
		zklayout.RollCallAnswerName(7, "node-1"),
		zklayout.RollCallAnswerName(8, "node-1"), // a later round too: still one node
		zklayout.RollCallAnswerName(6, "node-2"), // older round: stale
		zklayout.RollCallAnswerName(7, "self"),   // the decider itself
		zklayout.RollCallAnswerName(7, "node-9"), // not registered
		"garbage", "0000000007_Bad_Name", "0000000007-node-3",
	}
	if got := nodeagent.CountAnswers(children, 7, registered, "self"); got != 1 {
		t.Fatalf("CountAnswers = %d, want 1 (node-1 only)", got)
	}
	children = append(children, zklayout.RollCallAnswerName(9, "node-3"))
	if got := nodeagent.CountAnswers(children, 7, registered, "self"); got != 2 {
		t.Fatalf("CountAnswers = %d, want 2", got)
	}
}

// setMinAvailable rewrites svc's plan with another minAvailable (what the operator does when
// the RollingDeploy's quorum is edited).
func (e *env) setMinAvailable(svc string, minAvailable int) {
	data, _, err := e.zk.Get(e.ctx, e.layout.StagingService(svc))
	must(e.t, err)
	var plan zklayout.Plan
	must(e.t, zklayout.Decode(data, &plan))
	plan.MinAvailable = minAvailable
	data, err = zklayout.Encode(&plan)
	must(e.t, err)
	_, err = e.zk.Set(e.ctx, e.layout.StagingService(svc), data, -1)
	must(e.t, err)
}

// realNodesAndStaleRegistrations starts real agents on a v1 (plans publish minAvailable and
// minStaged real: the distribution gate waits for the real nodes only) and registers a v1 for
// each of stale from another live session: registrations with no agent of theirs behind them.
func (e *env) realNodesAndStaleRegistrations(real int, stale ...string) {
	t := e.t
	staged := real
	e.minStaged = &staged
	e.publish("a", "v1", "", real, zklayout.FailurePolicyPause, nil)
	e.startAgents(real)
	e.waitFor("all nodes online on v1", time.Minute, func() bool {
		return allOn(e.versions("a"), real, "v1") && len(e.deployQueue()) == 0
	})
	other := dial(t, e.ctx, logr.Discard())
	for _, n := range stale {
		_, err := other.Create(e.ctx, e.layout.CurrentNode("a", n), encode(t, &zklayout.Current{Node: n, Version: "v1",
			Health: zklayout.HealthHealthy, Since: time.Now().UTC()}), zkclient.Ephemeral)
		must(t, err)
	}
}

// TestBatchAdmission: ten nodes, quorum five, every node staged before the rollout may start.
// The first waiter's decision takes down as many as the quorum allows (itself and the four
// queued right behind it, in one transaction); the admitted nodes upgrade on their own; the
// quorum holds throughout by ground truth.
func TestBatchAdmission(t *testing.T) {
	const nodes, minAvailable = 10, 5
	e := newEnv(t)
	e.publish("a", "v1", "", minAvailable, zklayout.FailurePolicyPause, nil)
	e.startAgents(nodes)
	e.waitFor("all on v1", time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v1") && len(e.deployQueue()) == 0 })

	e.av.arm()
	e.paused = true
	e.publish("a", "v2", "v1", minAvailable, zklayout.FailurePolicyPause, nil)
	e.waitFor("every node staged", time.Minute, func() bool {
		names, _, err := e.zk.Children(e.ctx, e.layout.StagingService("a"))
		return err == nil && len(names) == nodes
	})
	e.paused = false
	e.publish("a", "v2", "v1", minAvailable, zklayout.FailurePolicyPause, nil)
	e.waitFor("all on v2", 2*time.Minute, func() bool { return allOn(e.versions("a"), nodes, "v2") && len(e.deployQueue()) == 0 })

	if got := e.av.min("a"); got < minAvailable {
		t.Fatalf("quorum violated: only %d nodes ran the service at one point (minAvailable %d)", got, minAvailable)
	}
	admitted := e.counter(nodeagent.MetricAdmitted)
	rounds := e.counterWith(nodeagent.MetricRollCalls, nodeagent.ResultSuccess)
	t.Logf("%d decisions, %d nodes admitted by another's decision, lowest running %d", rounds, admitted, e.av.min("a"))
	// The first decision found all ten staged and registered: it admitted nodes-1-minAvailable.
	if admitted < nodes-1-minAvailable {
		t.Fatalf("%d nodes admitted by another node's decision, want at least %d (the first decision's batch)", admitted, nodes-1-minAvailable)
	}
	// Admitted nodes upgrade on their admission, without a decision of their own: one that
	// ignored its mark would register again and decide later, and every node would be a
	// decider.
	if rounds > nodes-(nodes-1-minAvailable) {
		t.Fatalf("%d decisions for %d nodes: the first batch's %d admitted nodes decided again", rounds, nodes, nodes-1-minAvailable)
	}
}
