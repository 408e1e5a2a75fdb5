package controllers

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

var (
	garbage   = []byte("\x00\xff not a payload")
	schema999 = []byte(`{"schema":999}`)
)

// createRaw writes a znode the way a person with zkCli would, parents included.
func createRaw(t *testing.T, p string, data []byte, mode zkclient.Mode) string {
	t.Helper()
	ctx := context.Background()
	if err := agentZK.EnsurePath(ctx, path.Dir(p)); err != nil {
		t.Fatal(err)
	}
	created, err := agentZK.Create(ctx, p, data, mode)
	if err != nil {
		t.Fatalf("create %s: %v", p, err)
	}
	return created
}

// planOf reads svc's plan without failing on a malformed one.
func planOf(svc string) (zklayout.Plan, error) {
	data, _, err := agentZK.Get(context.Background(), layout.StagingService(svc))
	if err != nil {
		return zklayout.Plan{}, err
	}
	var p zklayout.Plan
	return p, zklayout.Decode(data, &p)
}

// waitPlan waits until svc's plan decodes, is rd's and rolls out version.
func waitPlan(t *testing.T, svc, rd, version string) {
	t.Helper()
	uid := getRD(t, rd).UID
	waitFor(t, "plan of "+svc+" "+version+" by "+rd, func() (bool, string) {
		p, err := planOf(svc)
		if err != nil {
			return false, err.Error()
		}
		return p.DeployUID == string(uid) && p.Version == version, fmt.Sprintf("%+v", p)
	})
}

// eventMessages lists the messages of the events with reason about a RollingDeploy.
func eventMessages(t *testing.T, rd, reason string) []string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == rd && e.Regarding.Kind == "RollingDeploy" && e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

// waitEventMessage waits for an event with reason about rd whose message holds every one of msgs.
func waitEventMessage(t *testing.T, rd, reason string, msgs ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("event %s on %s saying %q", reason, rd, msgs), func() (bool, string) {
		got := eventMessages(t, rd, reason)
		for _, m := range got {
			all := true
			for _, want := range msgs {
				all = all && strings.Contains(m, want)
			}
			if all {
				return true, ""
			}
		}
		return false, fmt.Sprint(got)
	})
}

func waitGone(t *testing.T, p string) {
	t.Helper()
	waitFor(t, p+" to be deleted", func() (bool, string) { return !exists(t, p), "still there" })
}

// TestOperatorRepairsWhatItOwns writes garbage and a schema nobody knows where the operator
// owns the znodes, and where agents make only ephemeral ones: the operator rewrites or deletes
// each (an event names it) and the rollout goes on; a malformed registration of a live session
// is the agent's to repair and is only reported.
func TestOperatorRepairsWhatItOwns(t *testing.T) {
	ctx := context.Background()
	makeNodes(t, "rep", nodeNames("rep", 3)...)
	cleanupZK(t, "rep-a")

	createRaw(t, layout.StagingService("rep-a"), garbage, zkclient.Persistent)
	createRaw(t, layout.Release("rep-a", "v2"), schema999, zkclient.Persistent)
	badName := createRaw(t, layout.DeployEntry("rep-garbage"), garbage, zkclient.Persistent)
	badEntry := createRaw(t, layout.DeployPrefix("rep-a"), schema999, zkclient.PersistentSequential)
	strayStaged := createRaw(t, layout.StagingPrefix("rep-a", "rep-n3"), garbage, zkclient.PersistentSequential)
	strayCurrent := createRaw(t, layout.CurrentNode("rep-a", "rep-n3"), schema999, zkclient.Persistent)
	live := createRaw(t, layout.CurrentNode("rep-a", "rep-n2"), schema999, zkclient.Ephemeral)
	register(t, "rep-a", "rep-n1", "v1")

	createRD(t, newRD("rep", service("rep-a", "v2", "rep")))
	waitPlan(t, "rep-a", "rep", "v2")
	for _, p := range []string{badName, badEntry, strayStaged, strayCurrent} {
		waitGone(t, p)
	}
	data, _, err := agentZK.Get(ctx, layout.Release("rep-a", "v2"))
	if err != nil {
		t.Fatal(err)
	}
	var rel zklayout.Release
	if err := zklayout.Decode(data, &rel); err != nil || rel.Artifact.URL != service("rep-a", "v2", "rep").Artifact.URL {
		t.Fatalf("release not rewritten: %+v %v", rel, err)
	}
	waitEventMessage(t, "rep", EventZnodeRepaired, "plan", layout.StagingService("rep-a"))
	waitEventMessage(t, "rep", EventZnodeRepaired, "release", layout.Release("rep-a", "v2"))
	// Events of one kind form a series (the first note stays): one per kind is seen.
	waitEventMessage(t, "rep", EventZnodeRepaired, "deleted malformed deploy entry "+layout.Deploy())
	waitEventMessage(t, "rep", EventStrayZnodeDeleted, "rep-a/rep-n3")

	// The live session's malformed registration stays, reported; nothing is stalled.
	rd := waitCondition(t, "rep", v1alpha1.ConditionDegraded, condTrue, ReasonMalformedZnode, live)
	if !exists(t, live) {
		t.Fatal("an ephemeral znode of a live session was deleted")
	}
	if c := condition(rd, v1alpha1.ConditionStalled); c.Status == condTrue || rd.Status.Phase == v1alpha1.PhaseFailed {
		t.Fatalf("stalled on repaired znodes: phase %s, %+v", rd.Status.Phase, c)
	}
	// The repaired plan got its deploy entry, as a first publish does.
	if es := entries(t, "rep"); len(es) != 1 || es[0].Service != "rep-a" || es[0].Version != "v2" {
		t.Fatalf("deploy entries = %+v", es)
	}
	if slices.Contains(eventReasons(t, "rep"), EventRequeued) {
		t.Fatal("a repaired plan was reported as a requeue")
	}

	// The rollout completes once the agent replaced its registration.
	unregister(t, "rep-a", "rep-n2")
	for _, n := range nodeNames("rep", 3) {
		register(t, "rep-a", n, "v2")
	}
	waitCondition(t, "rep", v1alpha1.ConditionReady, condTrue, v1alpha1.ReasonComplete)

	// A plan corrupted after completion is noticed (its data is watched) and rewritten.
	if _, err := agentZK.Set(ctx, layout.StagingService("rep-a"), garbage, -1); err != nil {
		t.Fatal(err)
	}
	waitPlan(t, "rep-a", "rep", "v2")

	// So is a plan someone rewrote with another version.
	p, err := planOf("rep-a")
	if err != nil {
		t.Fatal(err)
	}
	p.Version = "v9"
	if _, err := agentZK.Set(ctx, layout.StagingService("rep-a"), encode(t, &p), -1); err != nil {
		t.Fatal(err)
	}
	waitEventMessage(t, "rep", EventPlanRepaired, layout.StagingService("rep-a"), `version "v9" instead of "v2"`)
	waitPlan(t, "rep-a", "rep", "v2")
	rd = waitCondition(t, "rep", v1alpha1.ConditionReady, condTrue, v1alpha1.ReasonComplete)
	if c := condition(rd, v1alpha1.ConditionStalled); c.Status == condTrue {
		t.Fatalf("stalled: %+v", c)
	}
}

// TestMalformedPlanGoesToTheFirstClaimant: an unreadable plan has no owner anybody can tell;
// of two RollingDeploys naming the service, the older rewrites it and the other waits.
func TestMalformedPlanGoesToTheFirstClaimant(t *testing.T) {
	makeNodes(t, "mpc", nodeNames("mpc", 1)...)
	cleanupZK(t, "mpc-a")
	createRaw(t, layout.StagingService("mpc-a"), schema999, zkclient.Persistent)
	register(t, "mpc-a", "mpc-n1", "v1")
	createRD(t, newRD("mpc-first", service("mpc-a", "v2", "mpc")))
	createRD(t, newRD("mpc-second", service("mpc-a", "v3", "mpc")))
	waitPlan(t, "mpc-a", "mpc-first", "v2")
	waitCondition(t, "mpc-second", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonServiceConflict, "mpc-first")
}

// TestReconcilePanicIsRecovered makes one RollingDeploy's pass panic in the middle of a service:
// the panic is reported (status, event, metric) with the service named, another RollingDeploy
// goes on meanwhile, and once the cause is gone the next pass succeeds.
func TestReconcilePanicIsRecovered(t *testing.T) {
	makeNodes(t, "boom", nodeNames("boom", 1)...)
	cleanupZK(t, "boom-a", "boom-b", "calm-a")
	register(t, "boom-b", "boom-n1", "v1")
	var armed atomic.Bool
	armed.Store(true)
	hook := phaseHook(func(rd, phase, svc string) {
		if rd == "boom" && phase == "digest" && svc == "boom-b" && armed.Load() {
			panic("injected by the test")
		}
	})
	reconciler.testHook.Store(&hook)
	t.Cleanup(func() { reconciler.testHook.Store(nil) })

	createRD(t, newRD("boom", service("boom-a", "v2", "boom"), service("boom-b", "v2", "boom", dependsOn("boom-a"))))
	createRD(t, newRD("calm", service("calm-a", "v2", "boom")))
	waitCondition(t, "boom", v1alpha1.ConditionDegraded, condTrue, ReasonInternalError,
		"phase digest", "service boom-b", "injected by the test")
	waitEvent(t, "boom", ReasonInternalError)
	reg := prometheus.NewRegistry()
	reg.MustRegister(reconcilePanics)
	if n := series(t, reg)[MetricReconcilePanics+"{phase=digest,rollingdeploy=boom,service=boom-b}"]; n < 1 {
		t.Fatalf("%s = %v", MetricReconcilePanics, n)
	}
	waitPlan(t, "calm-a", "calm", "v2")
	waitServiceStatus(t, "calm", "calm-a", func(s v1alpha1.ServiceStatus) bool { return s.Online == 0 && s.Total == 1 })

	armed.Store(false)
	// An annotation change enqueues boom at once, whatever the retry backoff has grown to.
	updateRD(t, "boom", func(rd *v1alpha1.RollingDeploy) { rd.Annotations = map[string]string{"test.rollkeeper.io/poke": "1"} })
	waitFor(t, "boom to recover", func() (bool, string) {
		rd := getRD(t, "boom")
		c := condition(rd, v1alpha1.ConditionDegraded)
		return c.Reason != ReasonInternalError && len(rd.Status.Services) == 2, fmt.Sprintf("%+v", c)
	})
	waitPlan(t, "boom-b", "boom", "v2")
}

// TestStatusNamesWhatBlocks: the nodes the distribution gate waits for, and a registration of
// a node the selector does not select, are named in status.
func TestStatusNamesWhatBlocks(t *testing.T) {
	makeNodes(t, "nwb", nodeNames("nwb", 3)...)
	cleanupZK(t, "nwb-a")
	for _, n := range nodeNames("nwb", 3) {
		register(t, "nwb-a", n, "v1")
	}
	register(t, "nwb-a", "nwb-elsewhere", "v1") // a node the selector does not select
	createRD(t, newRD("nwb", service("nwb-a", "v2", "nwb")))
	st := waitServiceStatus(t, "nwb", "nwb-a", func(s v1alpha1.ServiceStatus) bool {
		return strings.Contains(s.Message, "nodeSelector does not select, not counted online: nwb-elsewhere")
	})
	if st.Online != 3 || st.Total != 3 {
		t.Fatalf("the unselected node was counted: %+v", st)
	}
	// The gate counts every registration, as the agents do.
	stage(t, "nwb-a", "nwb-n2", "v2")
	waitServiceStatus(t, "nwb", "nwb-a", func(s v1alpha1.ServiceStatus) bool {
		return s.Staged == 1 && strings.Contains(s.Message, "not staged yet: nwb-elsewhere, nwb-n1, nwb-n3")
	})
}

// TestQueueHeadReport covers what the envtest cannot set up: a malformed head the operator may
// not delete (a foreign ACL on deploy/) is reported as holding every deploy behind it.
func TestQueueHeadReport(t *testing.T) {
	l := zklayout.MustNew("/rk")
	own := func(seq int64, svc string) deployEntry {
		return deployEntry{child: fmt.Sprintf("%s-%010d", svc, seq), seq: seq, entry: zklayout.DeployEntry{Deploy: "me", Service: svc, Version: "v2"}}
	}
	queue := []deployEntry{own(5, "a"), own(6, "b")}
	bad := []malformedEntry{{child: "x-0000000003", seq: 3, problem: "znode /rk/deploy/x-0000000003: malformed payload"},
		{child: "junk", seq: -1, problem: "znode /rk/deploy/junk is not a sequential deploy entry"}}
	blocked, degraded := queueBlock(l, "me", queue, bad)
	if !strings.Contains(degraded, "/rk/deploy/x-0000000003 heads the deploy queue") || !strings.Contains(degraded, "blocks every deploy behind it") {
		t.Fatalf("degraded = %q", degraded)
	}
	if len(blocked) != 2 || !strings.Contains(blocked["b"], "/rk/deploy/x-0000000003") {
		t.Fatalf("blocked = %v", blocked)
	}
	st := &v1alpha1.RollingDeployStatus{}
	applySummary(st, 1, summary{services: nil, malformed: []string{bad[0].problem, bad[1].problem}, queueBlocked: degraded})
	if c := condition(&v1alpha1.RollingDeploy{Status: *st}, v1alpha1.ConditionDegraded); c.Reason != ReasonMalformedZnode ||
		!strings.HasPrefix(c.Message, "deploy entry /rk/deploy/x-0000000003 heads the deploy queue") {
		t.Fatalf("Degraded = %+v", c)
	}

	// Own head, malformed entries behind: nothing is held.
	if blocked, degraded := queueBlock(l, "me", queue, []malformedEntry{{child: "x-0000000009", seq: 9}}); blocked != nil || degraded != "" {
		t.Fatalf("blocked = %v, degraded = %q", blocked, degraded)
	}
}
