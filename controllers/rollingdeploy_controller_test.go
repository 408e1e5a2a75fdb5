package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

const (
	condTrue  = metav1.ConditionTrue
	condFalse = metav1.ConditionFalse
)

func nodeNames(prefix string, n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("%s-n%d", prefix, i))
	}
	return out
}

func TestPublishesInTopologicalOrder(t *testing.T) {
	nodes := nodeNames("topo", 5)
	makeNodes(t, "topo", nodes...)
	cleanupZK(t, "topo-a", "topo-b")
	for _, n := range nodes {
		register(t, "topo-a", n, "v1")
		register(t, "topo-b", n, "v1")
	}
	// b is listed first but depends on a: a must be published ahead of it.
	createRD(t, newRD("topo",
		service("topo-b", "v2", "topo", dependsOn("topo-a")),
		service("topo-a", "v2", "topo", quorum(intstr.FromInt32(3)))))

	rd := waitCondition(t, "topo", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)

	pa, ok := readPlan(t, "topo-a")
	if !ok {
		t.Fatal("no plan for topo-a")
	}
	want := zklayout.Plan{Deploy: "topo", DeployUID: string(rd.UID), Service: "topo-a", Version: "v2", PreviousVersion: "v1",
		MinAvailable: 3, Selector: "rk-test=topo", FailurePolicy: "Pause"}
	if pa.Deploy != want.Deploy || pa.DeployUID != want.DeployUID || pa.Version != want.Version || pa.PreviousVersion != want.PreviousVersion ||
		pa.MinAvailable != want.MinAvailable || pa.Selector != want.Selector || pa.FailurePolicy != want.FailurePolicy {
		t.Fatalf("plan of topo-a = %+v, want %+v", pa, want)
	}
	pb, _ := readPlan(t, "topo-b")
	if pb.MinAvailable != 1 || !slices.Equal(pb.DependsOn, []string{"topo-a"}) || pb.Version != "v2" {
		t.Fatalf("plan of topo-b = %+v", pb)
	}
	for _, svc := range []string{"topo-a", "topo-b"} {
		data, _, err := agentZK.Get(context.Background(), layout.Release(svc, "v2"))
		if err != nil {
			t.Fatalf("release of %s: %v", svc, err)
		}
		var rel zklayout.Release
		if err := zklayout.Decode(data, &rel); err != nil {
			t.Fatal(err)
		}
		if rel.Artifact.SHA256 != sha2hex || rel.Artifact.Unpack != "tar.gz" || rel.HealthCheck.HTTPGet.Port != 9000 {
			t.Fatalf("release of %s = %+v", svc, rel)
		}
	}
	if got := entryServices(entries(t, "topo")); !slices.Equal(got, []string{"topo-a", "topo-b"}) {
		t.Fatalf("deploy queue = %v, want [topo-a topo-b]", got)
	}

	if rd.Status.Phase != v1alpha1.PhaseProgressing || rd.Status.Progress != "0/10" || rd.Status.ObservedGeneration != rd.Generation {
		t.Fatalf("status = %+v", rd.Status)
	}
	if !controllerutil.ContainsFinalizer(rd, Finalizer) {
		t.Fatal("finalizer missing")
	}
	if len(rd.Status.Services) != 2 {
		t.Fatalf("services status = %+v", rd.Status.Services)
	}
	a, b := rd.Status.Services[0], rd.Status.Services[1]
	if a.Name != "topo-a" || a.Position != 1 || a.Phase != v1alpha1.PhaseProgressing || a.Total != 5 || a.Online != 5 || a.MinAvailable != 3 {
		t.Fatalf("status of topo-a = %+v", a)
	}
	if b.Name != "topo-b" || b.Position != 2 || b.Phase != v1alpha1.PhasePending || !strings.Contains(b.Message, "waiting for topo-a") {
		t.Fatalf("status of topo-b = %+v", b)
	}
	waitEvent(t, "topo", EventPlanPublished)
}

func TestInvalidSpecStallsWithoutZooKeeperWrites(t *testing.T) {
	makeNodes(t, "cycle", nodeNames("cycle", 2)...)
	createRD(t, newRD("cycle",
		service("cyc-a", "v2", "cycle", dependsOn("cyc-b")),
		service("cyc-b", "v2", "cycle", dependsOn("cyc-a"))))

	rd := waitCondition(t, "cycle", v1alpha1.ConditionStalled, condTrue, v1alpha1.ReasonInvalidSpec, "dependency cycle: cyc-a -> cyc-b -> cyc-a")
	if rd.Status.Phase != v1alpha1.PhaseInvalid || condition(rd, v1alpha1.ConditionReady).Status != condFalse ||
		rd.Status.ObservedGeneration != rd.Generation {
		t.Fatalf("status = %+v", rd.Status)
	}
	for _, svc := range []string{"cyc-a", "cyc-b"} {
		for _, p := range []string{layout.StagingService(svc), layout.ReleaseService(svc)} {
			if exists(t, p) {
				t.Errorf("%s was written for an invalid spec", p)
			}
		}
	}
	if es := entries(t, "cycle"); len(es) != 0 {
		t.Errorf("deploy entries written for an invalid spec: %v", es)
	}
	waitEvent(t, "cycle", v1alpha1.ReasonInvalidSpec)
}

func TestQuorumLargerThanNodesStallsUntilNodesJoin(t *testing.T) {
	makeNodes(t, "quorum", nodeNames("quorum", 2)...)
	cleanupZK(t, "q-a")
	for _, n := range nodeNames("quorum", 3) {
		register(t, "q-a", n, "v1")
	}
	createRD(t, newRD("quorum", service("q-a", "v2", "quorum", quorum(intstr.FromInt32(3)))))

	waitCondition(t, "quorum", v1alpha1.ConditionStalled, condTrue, v1alpha1.ReasonQuorumUnreachable,
		`service "q-a"`, "quorum.minAvailable 3 is larger than the 2 node(s)", "rk-test=quorum")
	if exists(t, layout.StagingService("q-a")) || exists(t, layout.ReleaseService("q-a")) {
		t.Fatal("znodes written although the quorum cannot be met")
	}

	// A third Node with the label makes the quorum reachable: the Node watch picks it up.
	makeNodes(t, "quorum", "quorum-n3")
	waitCondition(t, "quorum", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)
	if p, ok := readPlan(t, "q-a"); !ok || p.MinAvailable != 3 {
		t.Fatalf("plan = %+v, %v", p, ok)
	}
}

func TestAPIServerRejectsInvalidSpecs(t *testing.T) {
	tests := []struct {
		name string
		rd   *v1alpha1.RollingDeploy
		want string
	}{
		{name: "bad sha", rd: newRD("bad-sha", service("x", "v1", "g", artifactSHA("abc"))), want: "spec.services[0].artifact.sha256"},
		{name: "bad url scheme", rd: func() *v1alpha1.RollingDeploy {
			s := service("x", "v1", "g")
			s.Artifact.URL = "ftp://artifacts.example/x.tgz"
			return newRD("bad-url", s)
		}(), want: "spec.services[0].artifact.url"},
		{name: "bad quorum percentage", rd: newRD("bad-quorum", service("x", "v1", "g", quorum(intstr.FromString("150%")))),
			want: "minAvailable must be a non-negative integer or a percentage"},
		{name: "bad quorum word", rd: newRD("bad-quorum-word", service("x", "v1", "g", quorum(intstr.FromString("most")))),
			want: "minAvailable must be a non-negative integer or a percentage"},
		{name: "negative quorum", rd: newRD("bad-quorum-neg", service("x", "v1", "g", quorum(intstr.FromInt32(-1)))),
			want: "minAvailable must be a non-negative integer or a percentage"},
		{name: "duplicate names", rd: newRD("dup", service("x", "v1", "g"), service("x", "v2", "g")), want: "Duplicate value"},
		{name: "unknown dependsOn", rd: newRD("unknown-dep", service("x", "v1", "g", dependsOn("ghost"))),
			want: "every dependsOn entry must name a service of this RollingDeploy"},
		{name: "self dependency", rd: newRD("self-dep", service("x", "v1", "g", dependsOn("x"))), want: "a service cannot depend on itself"},
		{name: "negative runAsUser", rd: func() *v1alpha1.RollingDeploy {
			s := service("x", "v1", "g")
			uid, gid := int64(-1), int64(0)
			s.Run.RunAsUser, s.Run.RunAsGroup = &uid, &gid
			return newRD("bad-uid", s)
		}(), want: "spec.services[0].run.runAsUser"},
		{name: "runAsGroup without runAsUser", rd: func() *v1alpha1.RollingDeploy {
			s := service("x", "v1", "g")
			gid := int64(1000)
			s.Run.RunAsGroup = &gid
			return newRD("group-only", s)
		}(), want: "runAsUser and runAsGroup must be set together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), tt.rd)
			if err == nil {
				deleteRD(t, tt.rd.Name)
				t.Fatal("the API server accepted the RollingDeploy")
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want Invalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestStatusFollowsZnodes(t *testing.T) {
	nodes := nodeNames("follow", 3)
	makeNodes(t, "follow", nodes...)
	cleanupZK(t, "follow-a")
	for _, n := range nodes {
		register(t, "follow-a", n, "v1")
	}
	createRD(t, newRD("follow", service("follow-a", "v2", "follow", quorum(intstr.FromInt32(2)))))

	waitServiceStatus(t, "follow", "follow-a", func(s v1alpha1.ServiceStatus) bool {
		return s.Total == 3 && s.Online == 3 && s.Updated == 0 && s.Staged == 0 && s.MinAvailable == 2
	})
	n1 := stage(t, "follow-a", "follow-n1", "v2")
	waitServiceStatus(t, "follow", "follow-a", func(s v1alpha1.ServiceStatus) bool { return s.Staged == 1 })

	startUpgrade(t, "follow-a", "follow-n1", "v2", n1)
	waitServiceStatus(t, "follow", "follow-a", func(s v1alpha1.ServiceStatus) bool {
		return s.Upgrading == 1 && s.Online == 2 && s.Unreachable == 0
	})

	finishUpgrade(t, "follow-a", "follow-n1", "v2", n1)
	waitServiceStatus(t, "follow", "follow-a", func(s v1alpha1.ServiceStatus) bool {
		return s.Updated == 1 && s.Upgrading == 0 && s.Staged == 0 && s.Online == 3
	})
	if rd := getRD(t, "follow"); rd.Status.Progress != "1/3" {
		t.Fatalf("progress = %q, want 1/3", rd.Status.Progress)
	}

	unregister(t, "follow-a", "follow-n3")
	waitServiceStatus(t, "follow", "follow-a", func(s v1alpha1.ServiceStatus) bool {
		return s.Unreachable == 1 && slices.Equal(s.UnreachableNodes, []string{"follow-n3"}) && strings.Contains(s.Message, "follow-n3")
	})

	// n3 first: with n2 first, n3 still unreachable and every online node on v2 is a complete
	// rollout (unreachable nodes do not block one), and the operator may report it at 2/3. n2's
	// registration is replaced in one transaction (register), so it is never seen gone.
	register(t, "follow-a", "follow-n3", "v2")
	register(t, "follow-a", "follow-n2", "v2")
	rd := waitCondition(t, "follow", v1alpha1.ConditionReady, condTrue, v1alpha1.ReasonComplete, "follow-a v2")
	if rd.Status.Phase != v1alpha1.PhaseComplete || rd.Status.Progress != "3/3" || rd.Status.Services[0].Phase != v1alpha1.PhaseComplete {
		t.Fatalf("status = %+v", rd.Status)
	}
	waitFor(t, "the complete service's deploy entry to go", func() (bool, string) {
		es := entries(t, "follow")
		return len(es) == 0, fmt.Sprint(es)
	})
	waitEvent(t, "follow", EventServiceComplete)
	waitEvent(t, "follow", v1alpha1.ReasonComplete)

	// A node comes back (new session) still running v1 after the rollout was done: the service
	// is queued again so that node gets its turn.
	register(t, "follow-a", "follow-n3", "v1")
	waitFor(t, "the service to be queued again", func() (bool, string) {
		es := entries(t, "follow")
		return len(es) == 1 && es[0].Service == "follow-a" && es[0].Version == "v2", fmt.Sprint(es)
	})
	if es := entries(t, "follow"); !es[0].CatchUp {
		t.Fatalf("entry %+v: want a catch-up entry (the service has no dependency)", es[0])
	}
	waitEvent(t, "follow", EventRequeued)
	register(t, "follow-a", "follow-n3", "v2")
	waitFor(t, "the entry to go again", func() (bool, string) {
		es := entries(t, "follow")
		return len(es) == 0, fmt.Sprint(es)
	})
}

// A service queued again after its rollout catches up (its entry does not wait for the
// services ahead) only while every service it depends on is complete: here a node falls behind
// on both a and b (b depends on a); a's entry catches up, b's waits its turn behind a.
func TestRequeueCatchesUpOnlyWithDependenciesComplete(t *testing.T) {
	nodes := nodeNames("catchup", 2)
	makeNodes(t, "catchup", nodes...)
	cleanupZK(t, "catchup-a")
	cleanupZK(t, "catchup-b")
	for _, svc := range []string{"catchup-a", "catchup-b"} {
		for _, n := range nodes {
			register(t, svc, n, "v2")
		}
	}
	createRD(t, newRD("catchup", service("catchup-a", "v2", "catchup"), service("catchup-b", "v2", "catchup", dependsOn("catchup-a"))))
	waitCondition(t, "catchup", v1alpha1.ConditionReady, condTrue, v1alpha1.ReasonComplete)
	waitFor(t, "no deploy entries", func() (bool, string) {
		es := entries(t, "catchup")
		return len(es) == 0, fmt.Sprint(es)
	})

	register(t, "catchup-a", "catchup-n2", "v1")
	waitFor(t, "a queued again", func() (bool, string) {
		es := entries(t, "catchup")
		return len(es) == 1, fmt.Sprint(es)
	})
	register(t, "catchup-b", "catchup-n2", "v1")
	waitFor(t, "b queued again", func() (bool, string) {
		es := entries(t, "catchup")
		return len(es) == 2, fmt.Sprint(es)
	})
	for _, e := range entries(t, "catchup") {
		if want := e.Service == "catchup-a"; e.CatchUp != want {
			t.Fatalf("entry %+v: catchUp %t, want %t (a has no dependency; b's, a, is incomplete)", e, e.CatchUp, want)
		}
	}
}

func TestHealthCheckFailureDegradesNamingTheNode(t *testing.T) {
	nodes := nodeNames("health", 3)
	makeNodes(t, "health", nodes...)
	cleanupZK(t, "health-a")
	for _, n := range nodes {
		register(t, "health-a", n, "v1")
	}
	createRD(t, newRD("health", service("health-a", "v2", "health", quorum(intstr.FromInt32(2)))))
	waitCondition(t, "health", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)

	recordFailure(t, "health-a", "health-n2", "v2", zklayout.FailureHealthCheck, "GET /healthz: HTTP 500")
	rd := waitCondition(t, "health", v1alpha1.ConditionDegraded, condTrue, v1alpha1.ReasonHealthCheckFailed, "node health-n2", "HTTP 500")
	if c := condition(rd, v1alpha1.ConditionStalled); c.Status != condTrue || c.Reason != v1alpha1.ReasonHealthCheckFailed {
		t.Fatalf("Stalled = %+v", c)
	}
	if rd.Status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("phase = %s", rd.Status.Phase)
	}
	s := rd.Status.Services[0]
	if s.Failed != 1 || len(s.FailedNodes) != 1 || s.FailedNodes[0].Node != "health-n2" || s.FailedNodes[0].Kind != zklayout.FailureHealthCheck {
		t.Fatalf("service status = %+v", s)
	}
	waitEvent(t, "health", v1alpha1.ReasonHealthCheckFailed)
}

// A node that refused a znode for its signature (whatever the version) makes the deploy
// Degraded=SignatureRefused, naming the node and the znode; it never halts the rollout.
func TestSignatureFailureIsDegraded(t *testing.T) {
	nodes := nodeNames("sig", 2)
	makeNodes(t, "sig", nodes...)
	cleanupZK(t, "sig-a")
	for _, n := range nodes {
		register(t, "sig-a", n, "v1")
	}
	createRD(t, newRD("sig", service("sig-a", "v2", "sig")))
	waitCondition(t, "sig", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)
	recordFailure(t, "sig-a", "sig-n2", "v1", zklayout.FailureSignature, "znode /rollkeeper/staging/sig-a: not signed")
	rd := waitCondition(t, "sig", v1alpha1.ConditionDegraded, condTrue, ReasonSignatureRefused,
		"sig-n2", "/rollkeeper/staging/sig-a", "not signed")
	if rd.Status.Phase == v1alpha1.PhaseFailed {
		t.Fatalf("a refused signature halted the rollout: %+v", rd.Status)
	}
}

func TestArtifactFailureSaysWhichArtifact(t *testing.T) {
	nodes := nodeNames("art", 2)
	makeNodes(t, "art", nodes...)
	cleanupZK(t, "art-a")
	for _, n := range nodes {
		register(t, "art-a", n, "v1")
	}
	createRD(t, newRD("art", service("art-a", "v2", "art")))
	waitCondition(t, "art", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)

	// An agent reports the digest it computed from what it downloaded (as older agents do):
	// status and events, readable by anyone with view, never show it, or a user could copy it
	// into the spec and bless whatever the origin served.
	sum := sha256.Sum256([]byte("whatever the origin served"))
	computed := hex.EncodeToString(sum[:])
	recordFailure(t, "art-a", "art-n1", "v2", zklayout.FailureArtifact,
		"sha256 mismatch: want sha256 "+sha2hex+", got "+strings.ToUpper(computed[:32])+computed[32:])
	rd := waitCondition(t, "art", v1alpha1.ConditionDegraded, condTrue, v1alpha1.ReasonArtifactFailed,
		"https://artifacts.example/art-a-v2.tar.gz", sha2hex, "node art-n1", "sha256 mismatch")
	if rd.Status.Phase != v1alpha1.PhaseFailed || rd.Status.Services[0].FailedNodes[0].Kind != zklayout.FailureArtifact {
		t.Fatalf("status = %+v", rd.Status)
	}
	waitEvent(t, "art", v1alpha1.ReasonArtifactFailed)
	rd = getRD(t, "art")
	status, err := json.Marshal(rd.Status)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(string(status)), computed) {
		t.Fatalf("the status shows the computed digest: %s", status)
	}
	if r := rd.Status.Services[0].FailedNodes[0].Reason; !strings.Contains(r, "sha256 mismatch") || !strings.Contains(r, "[digest withheld]") {
		t.Fatalf("failed node reason %q: want the mismatch, its digests withheld", r)
	}
	list := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if e.Regarding.Name == "art" && strings.Contains(strings.ToLower(e.Note), computed) {
			t.Fatalf("event %s shows the computed digest: %s", e.Reason, e.Note)
		}
	}
}

func TestSecondDeployOfAServiceWaits(t *testing.T) {
	nodes := nodeNames("share", 2)
	makeNodes(t, "share", nodes...)
	cleanupZK(t, "shared")
	for _, n := range nodes {
		register(t, "shared", n, "v1")
	}
	createRD(t, newRD("share-first", service("shared", "v2", "share")))
	first := waitCondition(t, "share-first", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)

	// Created later (or in the same second, and later by name): it waits.
	createRD(t, newRD("share-second", service("shared", "v3", "share")))
	second := waitCondition(t, "share-second", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonServiceConflict, `"share-first"`)
	if second.Status.Phase != v1alpha1.PhaseWaiting {
		t.Fatalf("phase = %s", second.Status.Phase)
	}
	if p, _ := readPlan(t, "shared"); p.Deploy != "share-first" || p.DeployUID != string(first.UID) || p.Version != "v2" {
		t.Fatalf("plan = %+v, want share-first's", p)
	}
	if exists(t, layout.Release("shared", "v3")) || len(entries(t, "share-second")) != 0 {
		t.Fatal("the waiting RollingDeploy wrote to ZooKeeper")
	}
	waitEvent(t, "share-second", EventWaiting)

	// The first rollout completes: the second takes the service over.
	for _, n := range nodes {
		register(t, "shared", n, "v2")
	}
	waitCondition(t, "share-second", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)
	p, _ := readPlan(t, "shared")
	if p.Deploy != "share-second" || p.Version != "v3" || p.PreviousVersion != "v2" {
		t.Fatalf("plan after takeover = %+v", p)
	}
	// The older one never takes it back while the newer one rolls.
	waitCondition(t, "share-first", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonServiceConflict, `"share-second"`)
	// Whichever pass came first, the older one's completed entry does not stay in the queue
	// (at its head it would hold share-second back).
	waitFor(t, "share-first's completed deploy entry to go", func() (bool, string) {
		e := entries(t, "share-first")
		return len(e) == 0, fmt.Sprint(e)
	})
}

// A RollingDeploy deleted with its finalizer stripped by hand leaves its deploy entries; the
// next pass of any RollingDeploy deletes them, and only them, so they cannot hold the queue.
func TestOrphanedDeployEntriesAreDeleted(t *testing.T) {
	nodes := nodeNames("orph", 2)
	makeNodes(t, "orph", nodes...)
	cleanupZK(t, "orph-a", "orph-b", "orph-c")
	for _, n := range nodes {
		register(t, "orph-b", n, "v1")
	}
	createRD(t, newRD("orph-keep", service("orph-b", "v2", "orph")))
	waitFor(t, "orph-keep's deploy entry", func() (bool, string) { return len(entries(t, "orph-keep")) == 1, "" })

	// What the deleted RollingDeploy "orph-gone" left: an entry at the queue's tail (the queue
	// is shared by every test of the package, so it cannot be put at the head here).
	ctx := context.Background()
	data := encode(t, &zklayout.DeployEntry{Deploy: "orph-gone", Service: "orph-a", Version: "v1", Generation: 1})
	if err := agentZK.EnsurePath(ctx, layout.Deploy()); err != nil {
		t.Fatal(err)
	}
	if _, err := agentZK.Create(ctx, layout.DeployPrefix("orph-a"), data, zkclient.PersistentSequential); err != nil {
		t.Fatal(err)
	}

	createRD(t, newRD("orph-new", service("orph-c", "v1", "orph")))
	waitFor(t, "the orphaned entry to go", func() (bool, string) {
		es := entries(t, "orph-gone")
		return len(es) == 0, fmt.Sprint(es)
	})
	// Whichever pass came first reports it.
	waitFor(t, "event "+EventOrphanEntryDeleted, func() (bool, string) {
		rs := append(eventReasons(t, "orph-keep"), eventReasons(t, "orph-new")...)
		return slices.Contains(rs, EventOrphanEntryDeleted), fmt.Sprint(rs)
	})
	if es := entries(t, "orph-keep"); len(es) != 1 {
		t.Errorf("entries of a live RollingDeploy: %v", es)
	}
}

func TestNewVersionSupersedesThePlan(t *testing.T) {
	nodes := nodeNames("super", 3)
	makeNodes(t, "super", nodes...)
	cleanupZK(t, "sup-a", "sup-b")
	for _, n := range nodes {
		register(t, "sup-a", n, "v1")
		register(t, "sup-b", n, "v1")
	}
	createRD(t, newRD("super", service("sup-a", "v2", "super"), service("sup-b", "v2", "super", dependsOn("sup-a"))))
	waitCondition(t, "super", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)
	before := entrySeqs(t, "super")
	if len(before) != 2 {
		t.Fatalf("deploy entries = %v", before)
	}
	recordFailure(t, "sup-a", "super-n1", "v2", zklayout.FailureHealthCheck, "HTTP 500")
	waitCondition(t, "super", v1alpha1.ConditionDegraded, condTrue, v1alpha1.ReasonHealthCheckFailed, "super-n1")

	updateRD(t, "super", func(rd *v1alpha1.RollingDeploy) {
		rd.Spec.Services[0] = service("sup-a", "v3", "super", artifactSHA(sha3hex))
	})
	waitFor(t, "the plan of sup-a to move to v3", func() (bool, string) {
		p, _ := readPlan(t, "sup-a")
		return p.Version == "v3", fmt.Sprintf("%+v", p)
	})
	if p, _ := readPlan(t, "sup-a"); p.PreviousVersion != "v2" {
		t.Fatalf("PreviousVersion = %q, want v2", p.PreviousVersion)
	}
	if p, _ := readPlan(t, "sup-b"); p.Version != "v2" || p.PreviousVersion != "v1" {
		t.Fatalf("plan of sup-b changed: %+v", p)
	}
	if names, _, err := agentZK.Children(context.Background(), layout.FailureService("sup-a")); err != nil || len(names) != 0 {
		t.Fatalf("failures of the old version left: %v %v", names, err)
	}
	after := entrySeqs(t, "super")
	if len(after) != 2 || after[0] <= before[1] {
		t.Fatalf("deploy entries not recreated: before %v, after %v", before, after)
	}
	if got := entryServices(entries(t, "super")); !slices.Equal(got, []string{"sup-a", "sup-b"}) {
		t.Fatalf("deploy queue = %v", got)
	}
	rd := waitCondition(t, "super", v1alpha1.ConditionDegraded, condFalse, v1alpha1.ReasonAsExpected)
	if rd.Status.Services[0].TargetVersion != "v3" || rd.Status.Phase != v1alpha1.PhaseProgressing {
		t.Fatalf("status = %+v", rd.Status)
	}

	// Pausing only rewrites the plans.
	updateRD(t, "super", func(rd *v1alpha1.RollingDeploy) { rd.Spec.Paused = true })
	waitCondition(t, "super", v1alpha1.ConditionReady, condFalse, v1alpha1.ReasonPaused)
	for _, svc := range []string{"sup-a", "sup-b"} {
		if p, _ := readPlan(t, svc); !p.Paused {
			t.Fatalf("plan of %s not paused: %+v", svc, p)
		}
	}
	if got := entrySeqs(t, "super"); !slices.Equal(got, after) {
		t.Fatalf("pausing recreated the deploy entries: %v -> %v", after, got)
	}
	if rd := getRD(t, "super"); rd.Status.Phase != v1alpha1.PhasePaused {
		t.Fatalf("phase = %s", rd.Status.Phase)
	}
}

func TestDeletionCleansUpButLeavesCurrent(t *testing.T) {
	nodes := nodeNames("del", 2)
	makeNodes(t, "del", nodes...)
	cleanupZK(t, "del-a", "del-b")
	for _, n := range nodes {
		register(t, "del-a", n, "v1")
	}
	register(t, "del-b", "del-n1", "v2") // already runs the target: its release must stay
	register(t, "del-b", "del-n2", "v1")
	createRD(t, newRD("del", service("del-a", "v2", "del"), service("del-b", "v2", "del")))
	waitCondition(t, "del", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)
	stage(t, "del-a", "del-n1", "v2")
	recordFailure(t, "del-a", "del-n2", "v2", zklayout.FailureArtifact, "connection refused")
	waitServiceStatus(t, "del", "del-a", func(s v1alpha1.ServiceStatus) bool { return s.Staged == 1 && s.Failed == 1 })

	deleteRD(t, "del")
	for _, p := range []string{layout.StagingService("del-a"), layout.StagingService("del-b"), layout.Failure("del-a", "del-n2"),
		layout.Release("del-a", "v2")} {
		if exists(t, p) {
			t.Errorf("%s left after deletion", p)
		}
	}
	if !exists(t, layout.Release("del-b", "v2")) {
		t.Error("the release of a running version was deleted")
	}
	if es := entries(t, "del"); len(es) != 0 {
		t.Errorf("deploy entries left: %v", es)
	}
	for _, svc := range []string{"del-a", "del-b"} {
		for _, n := range nodes {
			if !exists(t, layout.CurrentNode(svc, n)) {
				t.Errorf("deletion touched current/%s/%s", svc, n)
			}
		}
	}
}

func TestMalformedPayloadsAreReportedNotActedOn(t *testing.T) {
	ctx := context.Background()
	makeNodes(t, "bad", nodeNames("bad", 2)...)
	cleanupZK(t, "bad-a")

	// A registration nobody can read: the node counts as online, never as updated.
	register(t, "bad-a", "bad-n1", "v2")
	if _, err := agentZK.Create(ctx, layout.CurrentNode("bad-a", "bad-n2"), []byte("{not json"), zkclient.Ephemeral); err != nil {
		t.Fatal(err)
	}
	createRD(t, newRD("bad", service("bad-a", "v2", "bad")))
	rd := waitCondition(t, "bad", v1alpha1.ConditionDegraded, condTrue, ReasonMalformedZnode, layout.CurrentNode("bad-a", "bad-n2"), "malformed payload")
	s := rd.Status.Services[0]
	if s.Phase == v1alpha1.PhaseComplete || s.Online != 2 || s.Updated != 1 || !strings.Contains(s.Message, "malformed payload") {
		t.Fatalf("service status = %+v", s)
	}
	if es := entries(t, "bad"); len(es) != 1 {
		t.Fatalf("deploy entry of a service that is not known to be complete = %v", es)
	}
	waitEvent(t, "bad", ReasonMalformedZnode)
	// A plan nobody can read is rewritten: TestOperatorRepairsWhatItOwns.
}

func TestReleaseIsImmutable(t *testing.T) {
	ctx := context.Background()
	makeNodes(t, "immut", nodeNames("immut", 1)...)
	cleanupZK(t, "immut-a")
	register(t, "immut-a", "immut-n1", "v1")
	// A release of v2 with another artifact already exists.
	other := zklayout.Release{Service: "immut-a", Version: "v2", Artifact: zklayout.Artifact{URL: "https://elsewhere.example/a.tgz",
		SHA256: sha1hex, Unpack: "tar.gz"}, Run: zklayout.Run{Command: []string{"x"}}}
	if err := agentZK.EnsurePath(ctx, layout.ReleaseService("immut-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := agentZK.Create(ctx, layout.Release("immut-a", "v2"), encode(t, &other), zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	createRD(t, newRD("immut", service("immut-a", "v2", "immut")))
	waitCondition(t, "immut", v1alpha1.ConditionStalled, condTrue, ReasonReleaseConflict, "immutable", "https://elsewhere.example/a.tgz")
	if exists(t, layout.StagingService("immut-a")) {
		t.Fatal("plan written despite the release conflict")
	}
}

// placeholder is a ${NAME} the demo substitutes in the samples.
var placeholder = regexp.MustCompile(`\$\{([A-Z0-9_]+)\}`)

// TestSampleRollsOut applies config/samples with its placeholders filled in, as make demo does.
func TestSampleRollsOut(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "config", "samples", "rollkeeper_v1alpha1_rollingdeploy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"ARTIFACT_A_VERSION": "v2", "ARTIFACT_A_URL": "file:///tmp/a-v2.tar.gz", "ARTIFACT_A_SHA256": sha1hex,
		"ARTIFACT_B_VERSION": "v2", "ARTIFACT_B_URL": "https://artifacts.example/b-v2.tar.gz", "ARTIFACT_B_SHA256": sha2hex,
	}
	var missing []string
	filled := placeholder.ReplaceAllStringFunc(string(raw), func(m string) string {
		k := placeholder.FindStringSubmatch(m)[1]
		v, ok := values[k]
		if !ok {
			missing = append(missing, k)
		}
		return v
	})
	if len(missing) > 0 {
		t.Fatalf("sample has placeholders the test does not know: %v", missing)
	}
	rd := &v1alpha1.RollingDeploy{}
	if err := yaml.UnmarshalStrict([]byte(filled), rd); err != nil {
		t.Fatalf("sample does not decode: %v", err)
	}
	nodes := nodeNames("sample", 5)
	for _, n := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"rollkeeper.io/demo": "true"}}}
		if err := k8s.Create(context.Background(), node); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), node) })
	}
	cleanupZK(t, "a", "b")
	for _, n := range nodes {
		register(t, "a", n, "v1")
		register(t, "b", n, "v1")
	}
	createRD(t, rd)
	waitCondition(t, rd.Name, v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)
	pa, _ := readPlan(t, "a")
	pb, _ := readPlan(t, "b")
	if pa.MinAvailable != 3 || pb.MinAvailable != 3 || pa.Selector != "rollkeeper.io/demo=true" {
		t.Fatalf("plans = %+v, %+v", pa, pb)
	}
	if got := entryServices(entries(t, rd.Name)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("deploy queue = %v", got)
	}
}

// TestZooKeeperOutage runs last: it stops the ZooKeeper server for a moment.
func TestZooKeeperOutage(t *testing.T) {
	nodes := nodeNames("outage", 2)
	makeNodes(t, "outage", nodes...)
	cleanupZK(t, "outage-a")
	for _, n := range nodes {
		register(t, "outage-a", n, "v1")
	}
	createRD(t, newRD("outage", service("outage-a", "v2", "outage")))
	waitCondition(t, "outage", v1alpha1.ConditionReconciling, condTrue, v1alpha1.ReasonProgressing)

	srv := zkServer.Servers[0]
	srv.Stop()
	restarted := false
	restart := func() {
		if restarted {
			return
		}
		restarted = true
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := srv.WaitReady(ctx, waitTimeout); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restart)

	updateRD(t, "outage", func(rd *v1alpha1.RollingDeploy) { rd.Spec.Paused = true })
	waitCondition(t, "outage", v1alpha1.ConditionReady, condFalse, v1alpha1.ReasonZooKeeperError, "cannot reach ZooKeeper")

	restart()
	waitCondition(t, "outage", v1alpha1.ConditionReady, condFalse, v1alpha1.ReasonPaused)
	waitFor(t, "the paused plan", func() (bool, string) {
		data, _, err := agentZK.Get(context.Background(), layout.StagingService("outage-a"))
		if err != nil {
			return false, err.Error()
		}
		var p zklayout.Plan
		if err := zklayout.Decode(data, &p); err != nil {
			return false, err.Error()
		}
		return p.Paused, fmt.Sprintf("%+v", p)
	})
}
