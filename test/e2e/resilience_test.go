package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/controllers"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// slowStart makes every start of the version take about d, so a rollout lasts long enough to
// be interfered with.
func slowStart(d string) harness.ServiceOption {
	return harness.Mutate(func(sp *rkv1alpha1.ServiceSpec) {
		sp.Run.Args = append(sp.Run.Args, "--startup-delay="+d)
		sp.HealthCheck.FailureThreshold = 15
	})
}

// planVersion reads the version of staging/<svc> straight from ZooKeeper.
func planVersion(ctx context.Context, s *harness.Stack, svc string) (string, error) {
	zk, err := s.ZK(ctx)
	if err != nil {
		return "", err
	}
	data, _, err := zk.Get(ctx, s.Layout.StagingService(svc))
	if errors.Is(err, zkclient.ErrNoNode) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var p zklayout.Plan
	if err := zklayout.Decode(data, &p); err != nil {
		return "", err
	}
	return p.Version, nil
}

func deployQueue(ctx context.Context, s *harness.Stack) ([]string, error) {
	zk, err := s.ZK(ctx)
	if err != nil {
		return nil, err
	}
	q, _, err := zk.Children(ctx, s.Layout.Deploy())
	return q, err
}

// The operator dies at each step of publishing a new version (a hook stops it exactly there,
// then the test SIGKILLs it and freezes the API server). A plan is the commit point and is
// written only once the version's release and torrent exist, so:
//   - after it (after-plan, while-seeding) the agents finish the rollout alone, dependencies
//     and quorum included, with the operator and the Kubernetes API server both gone;
//   - before it (before-release, after-release, after-torrent) no plan names v2: no node
//     changes version and every host service keeps serving v1; once the API server is back
//     and the operator restarts, it redoes the missing steps and the rollout finishes.
func TestAgentsFinishWithoutOperatorOrAPIServer(t *testing.T) {
	for _, step := range controllers.Steps {
		committed := step == controllers.StepAfterPlan || step == controllers.StepWhileSeeding
		t.Run(step, func(t *testing.T) {
			s, ctx := start(t, harness.Config{Nodes: 3, SkipOperator: true, RecordServices: []string{"a", "b"}})
			hookFile := filepath.Join(s.Dir, "hook-reached")
			s.Operator.Env = []string{"ROLLKEEPER_TEST_HOOK_STOP_AT=" + step + "@v2", "ROLLKEEPER_TEST_HOOK_FILE=" + hookFile}
			must(t, s.StartOperator())
			deployV1(t, s, ctx, "ab",
				service(t, s, "a", "v1", harness.MinAvailable(2)),
				service(t, s, "b", "v1", harness.DependsOn("a"), harness.MinAvailable(2)))

			since := time.Now()
			setServices(t, s, ctx, "ab",
				service(t, s, "a", "v2", harness.MinAvailable(2)),
				service(t, s, "b", "v2", harness.DependsOn("a"), harness.MinAvailable(2)))
			must(t, harness.WaitFor(ctx, time.Minute, "the operator to reach "+step, func(context.Context) (bool, error) {
				_, err := os.Stat(hookFile)
				return err == nil, nil
			}))
			must(t, s.Operator.Kill())
			must(t, s.ControlPlane.Freeze())
			frozen := true
			t.Cleanup(func() {
				if frozen {
					_ = s.ControlPlane.Thaw()
				}
			})
			t.Logf("operator killed at %s, API server frozen; the agents are on their own", step)

			if committed {
				must(t, s.WaitForServiceVersions(ctx, "a", "v2", rolloutTime))
				must(t, s.WaitForServiceVersions(ctx, "b", "v2", rolloutTime))
				must(t, harness.WaitFor(ctx, time.Minute, "deploy queue emptied by the agents", func(ctx context.Context) (bool, error) {
					q, err := deployQueue(ctx, s)
					return len(q) == 0, err
				}))
				assertQuorum(t, s, "a", since, 2)
				assertQuorum(t, s, "b", since, 2)
				return
			}

			// No plan names v2, and agents act on plans only: what runs stays as it is.
			for _, svc := range []string{"a", "b"} {
				v, err := planVersion(ctx, s, svc)
				must(t, err)
				if v != "v1" {
					t.Fatalf("plan of %s names %q after the operator died at %s; want v1 (the commit point is the plan, after the torrent)", svc, v, step)
				}
				got, err := s.ServiceVersions(ctx, svc)
				must(t, err)
				for node, v := range got {
					if v != "v1" {
						t.Fatalf("%s on %s answers %q with no plan for v2; want v1", svc, node, v)
					}
				}
			}
			must(t, s.ControlPlane.Thaw())
			frozen = false
			s.Operator.Env = nil
			must(t, s.StartOperator())
			t.Log("API server thawed and operator restarted without the hook")
			must(t, s.WaitForServiceVersions(ctx, "a", "v2", rolloutTime))
			must(t, s.WaitForServiceVersions(ctx, "b", "v2", rolloutTime))
			_, err := s.WaitForReady(ctx, "ab", rolloutTime)
			must(t, err)
			assertQuorum(t, s, "a", since, 2)
			assertQuorum(t, s, "b", since, 2)
		})
	}
}

// A ZooKeeper server of a 3-server ensemble dies mid-rollout: the agents fail over to the
// others and the rollout completes with the quorum kept.
func TestZooKeeperServerFailover(t *testing.T) {
	// With digest auth, as the chart's zookeeper.auth installs it: the clients that reconnect
	// to another server must authenticate again to go on writing.
	s, ctx := start(t, harness.Config{ZooKeeperServers: 3, RecordServices: []string{"a"}, ZKAuth: "rollkeeper:e2e-secret"})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3)))

	since := time.Now()
	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(3), slowStart("1s")))
	must(t, s.Recorder.WaitStaging(ctx, "a", rolloutTime, "a node upgrading", func(m map[string]string) bool {
		for _, st := range m {
			if strings.HasPrefix(st, "upgrading") {
				return true
			}
		}
		return false
	}))
	for _, srv := range s.ZooKeeper.Servers {
		if out, err := zkFourLetter(srv.Addr()); err == nil && strings.Contains(out, "Mode: leader") {
			t.Logf("stopping the ZooKeeper leader %s mid-rollout", srv.Addr())
			srv.Stop()
			break
		}
	}
	_, err := s.WaitForReady(ctx, "a", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
	assertQuorum(t, s, "a", since, 3)
	assertZNodesGuarded(t, s, ctx, "a")
}

// assertZNodesGuarded: with digest auth, a client without the credentials (or with others)
// reads rollkeeper's znodes but can neither queue a deploy nor touch a node's state.
func assertZNodesGuarded(t *testing.T, s *harness.Stack, ctx context.Context, svc string) {
	t.Helper()
	node := s.Node(1).Name
	for _, auth := range []string{"", "rollkeeper:wrong-secret"} {
		c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(s.ZKServers), Auth: auth, Logger: logr.Discard()})
		must(t, err)
		if _, _, err := c.Get(ctx, s.Layout.CurrentNode(svc, node)); err != nil {
			t.Errorf("auth %q: read %s: %v", auth, s.Layout.CurrentNode(svc, node), err)
		}
		writes := map[string]error{}
		_, writes["queue a deploy"] = c.Create(ctx, s.Layout.DeployPrefix(svc), []byte("{}"), zkclient.PersistentSequential)
		_, writes["set current"] = c.Set(ctx, s.Layout.CurrentNode(svc, node), []byte("{}"), -1)
		writes["delete current"] = c.Delete(ctx, s.Layout.CurrentNode(svc, node), -1)
		writes["multi on staging"] = c.Multi(ctx, zkclient.CreateOp(s.Layout.StagingChild(svc, "intruder"), nil, zkclient.Persistent))
		for what, err := range writes {
			if !errors.Is(err, zkclient.ErrNoAuth) {
				t.Errorf("auth %q: %s: got %v, want %v", auth, what, err, zkclient.ErrNoAuth)
			}
		}
		c.Close()
	}
}

// A new version while the previous rollout is under way supersedes it cleanly: every node ends
// on the newest version and the quorum holds throughout.
func TestNewVersionSupersedesRollout(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"a"}})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3)))

	since := time.Now()
	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(3), slowStart("1s")))
	must(t, s.Recorder.WaitOnline(ctx, "a", rolloutTime, "a first node on v2", func(m map[string]string) bool {
		for _, v := range m {
			if v == "v2" {
				return true
			}
		}
		return false
	}))
	setServices(t, s, ctx, "a", service(t, s, "a", "v3", harness.MinAvailable(3)))
	rd, err := s.WaitForReady(ctx, "a", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v3", time.Minute))
	if st := harness.ServiceStatus(rd, "a"); st == nil || st.TargetVersion != "v3" || st.Updated != nodes {
		t.Fatalf("status: %s", harness.DescribeStatus(rd))
	}
	assertQuorum(t, s, "a", since, 3)
}

func zkFourLetter(addr string) (string, error) { return zkserver.FourLetter(addr, "srvr") }

// A RollingDeploy deleted with its finalizer stripped by hand leaves its deploy entry at the
// head of the queue. The agents must not wait behind it forever: the operator deletes it and
// the next rollout goes through.
func TestOrphanedQueueHeadDoesNotBlock(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 3})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(2)))

	zk, err := s.ZK(ctx)
	must(t, err)
	// Signed with the operator's key, as the deleted RollingDeploy's entry was.
	signer, err := zksign.LoadSigner(s.SigningKeyFile)
	must(t, err)
	data, err := signer.Encode(s.Layout.DeployPrefix("x"), &zklayout.DeployEntry{Deploy: "gone", Service: "x", Version: "v1", Generation: 1})
	must(t, err)
	orphan, err := zk.Create(ctx, s.Layout.DeployPrefix("x"), data, zkclient.PersistentSequential)
	must(t, err)

	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(2)))
	_, err = s.WaitForReady(ctx, "a", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
	if ok, err := zk.Exists(ctx, orphan); err != nil || ok {
		t.Fatalf("orphaned deploy entry %s still there (%v)", orphan, err)
	}
}

// A node cut off mid-deploy (its agent frozen: alive, silent) loses its ZooKeeper session and
// counts as unreachable; the others upgrade without it. When it answers again, the same agent
// process notices the expired session, registers anew and joins the new version.
func TestFrozenAgentRejoinsAfterSessionExpiry(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 3, RecordServices: []string{"a"}})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(1)))

	cut := s.Node(3)
	pid := cut.Agent.Pid()
	must(t, cut.Freeze())
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = cut.Thaw()
		}
	})
	must(t, s.Recorder.WaitOnline(ctx, "a", time.Minute, "node-3's session to expire", func(m map[string]string) bool {
		return m[cut.Name] == ""
	}))

	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(1)))
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", rolloutTime, "node-1", "node-2"))
	rd, err := s.WaitForRD(ctx, "a", time.Minute, "node-3 reported unreachable", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "a")
		return harness.Observed(rd) && st != nil && st.Updated == 2 && st.Unreachable == 1
	})
	must(t, err)
	t.Logf("status while node-3 is cut off: %s", harness.DescribeStatus(rd))

	must(t, cut.Thaw())
	thawed = true
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", rolloutTime))
	_, err = s.WaitForRD(ctx, "a", time.Minute, "every node updated, none unreachable", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "a")
		return harness.Observed(rd) && st != nil && st.Unreachable == 0 && st.Updated == 3
	})
	must(t, err)
	if got := cut.Agent.Pid(); got != pid || !cut.Agent.Running() {
		t.Fatalf("node-3's agent was restarted (pid %d, then %d): it should recover in-process", pid, got)
	}
}
