// Package e2e runs rollkeeper end to end: a real kube-apiserver and etcd (envtest), a real
// ZooKeeper, the operator and one agent process per simulated node, each running the fixture
// host service. Tests assert what a user checks: the versions the services answer with, the
// quorum seen by an independent ZooKeeper watcher, and the RollingDeploy's status.
package e2e

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const (
	nodes       = 5
	rolloutTime = 3 * time.Minute
)

func start(t *testing.T, cfg harness.Config) (*harness.Stack, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	if cfg.Nodes == 0 {
		cfg.Nodes = nodes
	}
	return harness.StartT(t, ctx, cfg), ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// service builds a fixture service spec or fails the test.
func service(t *testing.T, s *harness.Stack, name, version string, opts ...harness.ServiceOption) rkv1alpha1.ServiceSpec {
	t.Helper()
	sp, err := s.FixtureService(name, version, opts...)
	must(t, err)
	return sp
}

// deployV1 creates a RollingDeploy and waits until it is Ready and every node serves v1.
func deployV1(t *testing.T, s *harness.Stack, ctx context.Context, name string, specs ...rkv1alpha1.ServiceSpec) {
	t.Helper()
	must(t, s.Client.Create(ctx, harness.NewRollingDeploy(name, specs...)))
	_, err := s.WaitForReady(ctx, name, rolloutTime)
	must(t, err)
	for _, sp := range specs {
		must(t, s.WaitForServiceVersions(ctx, sp.Name, sp.Version, time.Minute))
	}
}

// setServices replaces the RollingDeploy's services.
func setServices(t *testing.T, s *harness.Stack, ctx context.Context, name string, specs ...rkv1alpha1.ServiceSpec) {
	t.Helper()
	must(t, s.UpdateRD(ctx, name, func(rd *rkv1alpha1.RollingDeploy) { rd.Spec.Services = specs }))
}

// wentOffline reports whether node left current/<svc> after since.
func wentOffline(s *harness.Stack, svc, node string, since time.Time) bool {
	for _, c := range s.Recorder.History(svc, node) {
		if c.Time.After(since) && c.Version == "" {
			return true
		}
	}
	return false
}

func assertQuorum(t *testing.T, s *harness.Stack, svc string, since time.Time, minAvailable int) {
	t.Helper()
	min, at, missed := s.Recorder.MinOnline(svc, since)
	t.Logf("%s: lowest online count seen by the independent watcher: %d (minAvailable %d, coalesced changes %d)", svc, min, minAvailable, missed)
	if min < minAvailable {
		t.Fatalf("quorum of %s violated: %d online at %s: %v\n%s", svc, min, at.Time.Format(time.RFC3339Nano), at.Members, s.Recorder.Report(svc))
	}
}

// 1. Five nodes, services a and b (b depends on a), quorum 3 for a: every node ends on v2 of
// both; b's rollout starts only after a's is complete; a's online count never went below 3;
// the RollingDeploy ends Ready.
func TestRolloutFollowsDependenciesAndQuorum(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"a", "b"}})
	deployV1(t, s, ctx, "ab",
		service(t, s, "a", "v1", harness.MinAvailable(3)),
		service(t, s, "b", "v1", harness.DependsOn("a"), harness.MinAvailable(3)))

	since := time.Now()
	setServices(t, s, ctx, "ab",
		service(t, s, "a", "v2", harness.MinAvailable(3)),
		service(t, s, "b", "v2", harness.DependsOn("a"), harness.MinAvailable(3)))
	rd, err := s.WaitForReady(ctx, "ab", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
	must(t, s.WaitForServiceVersions(ctx, "b", "v2", time.Minute))

	for _, svc := range []string{"a", "b"} {
		must(t, s.Recorder.WaitOnline(ctx, svc, time.Minute, "watcher sees every node on v2", func(m map[string]string) bool {
			return count(m, "v2") == nodes
		}))
	}
	assertQuorum(t, s, "a", since, 3)
	assertQuorum(t, s, "b", since, 3)

	// a is complete when its last node registered on v2; b's first node went down after that.
	// Compared in ZooKeeper's order (zxids): the watcher reads a and b each on its own, so on
	// a busy machine it can see b's first node leave before it sees a's last registration.
	var aDone int64
	var bDowns []harness.VersionChange
	for _, n := range s.Nodes {
		for _, c := range s.Recorder.History("a", n.Name) {
			if c.Time.After(since) && c.Version == "v2" && c.Zxid > aDone {
				aDone = c.Zxid // exact: the registration's creation
			}
		}
		for _, c := range s.Recorder.History("b", n.Name) {
			if c.Time.After(since) && c.Version == "" {
				bDowns = append(bDowns, c)
			}
		}
	}
	// A departure's zxid is exact or an upper bound: one below aDone proves b started first;
	// when all are exact and above it, the order is proven.
	exact := 0
	for _, c := range bDowns {
		if aDone == 0 || c.Zxid < aDone {
			t.Fatalf("b started before a was complete: a done at zxid 0x%x, a node of b down at zxid 0x%x (exact %v)\n%s\n%s",
				aDone, c.Zxid, c.Exact, s.Recorder.Report("a"), s.Recorder.Report("b"))
		}
		if c.Exact {
			exact++
		}
	}
	if len(bDowns) == 0 {
		t.Fatalf("no node of b went down\n%s", s.Recorder.Report("b"))
	}
	t.Logf("a done at zxid 0x%x; b's %d departures after it (%d exact, the others bounded from above)", aDone, len(bDowns), exact)
	for _, svc := range []string{"a", "b"} {
		st := harness.ServiceStatus(rd, svc)
		if st == nil || st.Updated != nodes || st.Online != nodes || st.Phase != rkv1alpha1.PhaseComplete {
			t.Fatalf("status of %s: %+v", svc, st)
		}
	}
	for _, name := range []string{"a-v2.tar.gz", "b-v2.tar.gz"} {
		t.Logf("origin requests for %s: %d", name, s.Artifacts.Requests(name))
	}
	if rd.Status.Phase != rkv1alpha1.PhaseComplete || rd.Status.Progress != "10/10" {
		t.Fatalf("phase %s progress %s", rd.Status.Phase, rd.Status.Progress)
	}
}

// 2. One node's agent is stopped during the deploy: the others finish, the status names it
// unreachable, and once restarted it comes back on the most popular version.
func TestUnreachableNodeRejoinsOnMostPopularVersion(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"a"}})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3)))

	down := s.Node(5)
	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(3)))
	must(t, down.Stop())
	stoppedAt := time.Now()

	others := []string{"node-1", "node-2", "node-3", "node-4"}
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", rolloutTime, others...))
	rd, err := s.WaitForRD(ctx, "a", time.Minute, "node-5 reported unreachable", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "a")
		return harness.Observed(rd) && st != nil && st.Unreachable == 1 && len(st.UnreachableNodes) == 1 && st.UnreachableNodes[0] == "node-5"
	})
	must(t, err)
	t.Logf("status while node-5 is down: %s", harness.DescribeStatus(rd))

	must(t, down.Start())
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
	must(t, s.Recorder.WaitOnline(ctx, "a", time.Minute, "watcher sees node-5 back", func(m map[string]string) bool {
		return m["node-5"] != ""
	}))
	// Back on v2 directly: its first registration after the stop is v2.
	for _, c := range s.Recorder.History("a", "node-5") {
		if c.Time.After(stoppedAt) && c.Version != "" {
			if c.Version != "v2" {
				t.Fatalf("node-5 came back on %s, want the most popular v2", c.Version)
			}
			break
		}
	}
	_, err = s.WaitForRD(ctx, "a", time.Minute, "no node unreachable", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "a")
		return harness.Observed(rd) && st != nil && st.Unreachable == 0 && st.Updated == nodes
	})
	must(t, err)
}

// 3. v2 fails its health check: that node rolls back to v1, the rollout stops, status Degraded
// names the node, and no other node was upgraded after it.
func TestHealthCheckFailureRollsBackAndHalts(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"a"}})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3)))
	// Every node registered on v1 before the clock starts: a node serving v1 registers once its
	// health check passes, and a first registration after since would pass for a return from
	// the failure below.
	must(t, s.Recorder.WaitOnline(ctx, "a", time.Minute, "every node online on v1 before v2", func(m map[string]string) bool {
		return len(m) == nodes && count(m, "v1") == nodes
	}))

	since := time.Now()
	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(3), harness.Unhealthy()))
	rd, err := s.WaitForCondition(ctx, "a", rkv1alpha1.ConditionDegraded, metav1.ConditionTrue, rkv1alpha1.ReasonHealthCheckFailed, rolloutTime)
	must(t, err)
	st := harness.ServiceStatus(rd, "a")
	if st == nil || len(st.FailedNodes) == 0 {
		t.Fatalf("no failed node in status: %s", harness.DescribeStatus(rd))
	}
	failed := st.FailedNodes[0].Node
	cond := findCondition(rd, rkv1alpha1.ConditionDegraded)
	if !strings.Contains(cond.Message, failed) {
		t.Fatalf("Degraded message %q does not name %s", cond.Message, failed)
	}
	must(t, s.WaitForServiceVersions(ctx, "a", "v1", time.Minute))
	// The independent watcher must have seen the failed nodes come back before we read its history.
	must(t, s.Recorder.WaitOnline(ctx, "a", time.Minute, "every node online on v1", func(m map[string]string) bool {
		return len(m) == nodes && count(m, "v1") == nodes
	}))

	// Nodes that went down after the failed node's failure: none. With quorum 3 of 5 two
	// nodes may have been upgrading at the same moment; they both fail on this version.
	failedAt := time.Time{}
	for _, f := range st.FailedNodes {
		h := s.Recorder.History("a", f.Node)
		for _, c := range h {
			if c.Time.After(since) && c.Version == "v1" && (failedAt.IsZero() || c.Time.Before(failedAt)) {
				failedAt = c.Time // back online on v1 after its failure
			}
		}
	}
	if failedAt.IsZero() {
		t.Fatalf("the watcher never saw a failed node come back on v1\n%s", s.Recorder.Report("a"))
	}
	for _, n := range s.Nodes {
		for _, c := range s.Recorder.History("a", n.Name) {
			if c.Time.After(failedAt) && c.Version == "" {
				t.Fatalf("%s went down for an upgrade after %s failed\n%s", n.Name, failed, s.Recorder.Report("a"))
			}
		}
	}
	if got := st.Failed; got < 1 || got > 2 {
		t.Fatalf("%d failed nodes, want the one (or two concurrent) that tried", got)
	}
	if rd.Status.Phase != rkv1alpha1.PhaseFailed {
		t.Fatalf("phase %s, want Failed", rd.Status.Phase)
	}
	assertQuorum(t, s, "a", since, 3)
}

// 4. Wrong sha256: no node restarts; the status says which artifact failed verification.
func TestWrongChecksumRestartsNothing(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"a"}})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3)))

	since := time.Now()
	bad := service(t, s, "a", "v2", harness.MinAvailable(3), harness.SHA256(strings.Repeat("0", 64)))
	setServices(t, s, ctx, "a", bad)
	rd, err := s.WaitForCondition(ctx, "a", rkv1alpha1.ConditionDegraded, metav1.ConditionTrue, rkv1alpha1.ReasonArtifactFailed, rolloutTime)
	must(t, err)
	msg := findCondition(rd, rkv1alpha1.ConditionDegraded).Message
	if !strings.Contains(msg, bad.Artifact.URL) || !strings.Contains(msg, "sha256") {
		t.Fatalf("Degraded message %q does not say which artifact failed verification", msg)
	}
	t.Logf("Degraded: %s", msg)
	versions, err := s.ServiceVersions(ctx, "a")
	must(t, err)
	for n, v := range versions {
		if v != "v1" {
			t.Fatalf("%s serves %q", n, v)
		}
		if wentOffline(s, "a", n, since) {
			t.Fatalf("%s restarted its service for an artifact that failed verification", n)
		}
	}
}

// 5. An agent is killed with SIGKILL in the middle of its upgrade: the quorum still holds and
// the node recovers when its agent restarts.
func TestAgentKilledMidUpgrade(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"a"}})
	// The new version starts slowly, so an upgrade lasts long enough to be interrupted.
	slow := harness.Mutate(func(sp *rkv1alpha1.ServiceSpec) {
		sp.Run.Args = append(sp.Run.Args, "--startup-delay=3s")
		sp.HealthCheck.FailureThreshold = 15
	})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3)))

	since := time.Now()
	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(3), slow))
	var victim string
	must(t, s.Recorder.WaitStaging(ctx, "a", rolloutTime, "a node upgrading", func(m map[string]string) bool {
		for n, st := range m {
			if strings.HasPrefix(st, "upgrading") {
				victim = n
				return true
			}
		}
		return false
	}))
	node := s.NodeByName(victim)
	t.Logf("killing the agent of %s mid-upgrade", victim)
	must(t, node.Kill())
	if online := s.Recorder.Online("a"); online[victim] != "" {
		t.Fatalf("%s still registered while upgrading", victim)
	}
	must(t, node.Start())
	_, err := s.WaitForReady(ctx, "a", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
	assertQuorum(t, s, "a", since, 3)
}

// 6. Invalid specs are rejected by the API server, or made Stalled with a clear message, and
// nothing is written to ZooKeeper.
func TestInvalidSpecs(t *testing.T) {
	s, ctx := start(t, harness.Config{SkipAgents: true})
	good := func(name string, opts ...harness.ServiceOption) rkv1alpha1.ServiceSpec {
		return service(t, s, name, "v1", opts...)
	}
	rejected := []struct {
		name string
		rd   *rkv1alpha1.RollingDeploy
		want string
	}{
		{"bad sha", harness.NewRollingDeploy("bad-sha", good("a", harness.SHA256("xyz"))), "sha256"},
		{"unknown dependency", harness.NewRollingDeploy("unknown-dep", good("a", harness.DependsOn("zz"))), "dependsOn"},
		{"self dependency", harness.NewRollingDeploy("self-dep", good("a", harness.DependsOn("a"))), "depend on itself"},
		{"duplicate names", harness.NewRollingDeploy("dup", good("a"), good("a")), "Duplicate value"},
		{"bad quorum", harness.NewRollingDeploy("bad-quorum", good("a", harness.MinAvailablePercent("150%"))), "minAvailable"},
		{"bad url scheme", harness.NewRollingDeploy("bad-url", good("a", harness.Mutate(func(sp *rkv1alpha1.ServiceSpec) {
			sp.Artifact.URL = "ftp://example.invalid/a.tgz"
		}))), "url"},
	}
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Client.Create(ctx, tc.rd)
			if err == nil {
				t.Fatalf("API server accepted %s", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("rejection %q does not mention %q", err, tc.want)
			}
		})
	}

	stalled := []struct {
		name string
		rd   *rkv1alpha1.RollingDeploy
		want string
	}{
		{"cycle", harness.NewRollingDeploy("cycle", good("a", harness.DependsOn("b")), good("b", harness.DependsOn("a"))), "cycle"},
		{"quorum above node count", harness.NewRollingDeploy("big-quorum", good("a", harness.MinAvailable(nodes+4))), "quorum"},
	}
	for _, tc := range stalled {
		t.Run(tc.name, func(t *testing.T) {
			must(t, s.Client.Create(ctx, tc.rd))
			rd, err := s.WaitForCondition(ctx, tc.rd.Name, rkv1alpha1.ConditionStalled, metav1.ConditionTrue, "", time.Minute)
			must(t, err)
			msg := findCondition(rd, rkv1alpha1.ConditionStalled).Message
			if !strings.Contains(strings.ToLower(msg), tc.want) {
				t.Fatalf("Stalled message %q does not mention %q", msg, tc.want)
			}
			t.Logf("Stalled: %s", msg)
		})
	}

	zk, err := s.ZK(ctx)
	must(t, err)
	for _, p := range []string{s.Layout.Staging(), s.Layout.Deploy(), s.Layout.Releases()} {
		children, _, err := zk.Children(ctx, p)
		if err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			t.Fatal(err)
		}
		if len(children) != 0 {
			t.Fatalf("%s holds %v after invalid specs only", p, children)
		}
	}
}

func findCondition(rd *rkv1alpha1.RollingDeploy, typ string) metav1.Condition {
	for _, c := range rd.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

func count(m map[string]string, version string) int {
	n := 0
	for _, v := range m {
		if v == version {
			n++
		}
	}
	return n
}
