package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-zookeeper/zk"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// Secure by default: with the stack's credentials (as a real install has them), an anonymous
// ZooKeeper client can write neither a plan nor a release, so it runs nothing on the nodes.
// Before, the tree was world-writable and one plan and one release made every agent start the
// release's command as root.
func TestAnonymousWriteRunsNothing(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 2})
	anon, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(s.ZKServers), Logger: logr.Discard()})
	must(t, err)
	defer anon.Close()

	// Wait for rollkeeper to have created its tree (the operator and the agents do, at start).
	admin, err := s.ZK(ctx)
	must(t, err)
	for _, p := range s.Layout.Bases() {
		must(t, waitExists(ctx, admin, p))
	}

	marker := filepath.Join(t.TempDir(), "pwned")
	// What an attacker would write (the payloads need not be valid: the writes must fail).
	rel := []byte(`{"service":"evil","version":"v1","run":{"command":["/bin/sh","-c","touch ` + marker + `"]}}`)
	plan := []byte(`{"service":"evil","version":"v1","minAvailable":0}`)
	l := s.Layout
	for p, data := range map[string][]byte{
		l.ReleaseService("evil"):   rel,
		l.StagingService("evil"):   plan,
		l.DeployPrefix("evil"):     nil,
		l.Root() + "/anything":     nil,
		l.CurrentService("evil"):   nil,
		l.FailureService("evil"):   nil,
		l.Torrents() + "/evil":     nil,
		l.RollCalls() + "/evil":    nil,
		l.Progress() + "/evil":     nil,
		l.Peers() + "/0123456789":  nil,
		l.Staging() + "/evil-plan": plan,
	} {
		if _, err := anon.Create(ctx, p, data, zkclient.Persistent); !errors.Is(err, zkclient.ErrNoAuth) {
			t.Errorf("anonymous create %s: %v, want ErrNoAuth", p, err)
		}
	}
	// The tree an agent reads is the operator's alone: nothing anonymous in it.
	for _, p := range []string{l.Staging(), l.Releases()} {
		children, _, err := admin.Children(ctx, p)
		must(t, err)
		if slices.Contains(children, "evil") || slices.Contains(children, "evil-plan") {
			t.Errorf("%s holds an anonymous entry: %v", p, children)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the anonymous release's command ran: %v", err)
	}
}

// A tree created anonymously before rollkeeper had credentials keeps its open ACL: the agent
// and the operator refuse to start on it and name the znode and the fix; without credentials
// at all they refuse and say how to give them (or to run open by name).
func TestOpenTreeAndMissingCredentialsAreRefused(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 1, SkipAgents: true, SkipOperator: true, ZKRoot: "/rk-open"})
	bins, err := harness.Build(ctx, harness.AgentBinary, harness.ManagerBinary)
	must(t, err)

	conn, _, err := zk.Connect(zkclient.ParseServers(s.ZKServers), 10*time.Second, zk.WithLogInfo(false))
	must(t, err)
	defer conn.Close()
	for _, p := range append([]string{s.Layout.Root()}, s.Layout.Bases()...) {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}

	// refuses runs cmd, which must exit on its own (a process that starts is killed at the
	// deadline and fails the test) with an error saying each of want.
	refuses := func(who, bin string, args []string, want ...string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(cctx, bin, args...).CombinedOutput()
		if cctx.Err() != nil {
			t.Fatalf("%s did not refuse to start; output:\n%s", who, out)
		}
		if err == nil {
			t.Fatalf("%s exited 0; output:\n%s", who, out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s's error does not say %q:\n%s", who, w, out)
			}
		}
	}
	n := s.Node(1)
	open := []string{"znode /rk-open may be changed by world:anyone:cdrwa", "setAcl -R /rk-open"}
	refuses("the agent", bins[harness.AgentBinary], s.AgentArgs(n), open...)
	refuses("the operator", bins[harness.ManagerBinary], s.ManagerArgs(), open...)

	noCreds := func(args []string) []string {
		return slices.DeleteFunc(slices.Clone(args), func(a string) bool { return strings.HasPrefix(a, "--zk-auth-file=") })
	}
	missing := []string{"no ZooKeeper credentials", "--zk-auth-file", "--insecure-allow-open-zookeeper"}
	refuses("the agent without credentials", bins[harness.AgentBinary], noCreds(s.AgentArgs(n)), missing...)
	refuses("the operator without credentials", bins[harness.ManagerBinary], noCreds(s.ManagerArgs()), missing...)

	without := func(args []string, flag string) []string {
		return slices.DeleteFunc(slices.Clone(args), func(a string) bool { return strings.HasPrefix(a, flag+"=") })
	}
	refuses("the agent without trusted keys", bins[harness.AgentBinary], without(s.AgentArgs(n), "--trusted-keys-file"),
		"no trusted keys", "--trusted-keys-file", "--insecure-allow-unsigned-plans")
	refuses("the operator without a signing key", bins[harness.ManagerBinary], without(s.ManagerArgs(), "--signing-key-file"),
		"no signing key", "--signing-key-file", "--insecure-allow-unsigned-plans")
}

// waitExists waits (on an exists watch) until p exists.
func waitExists(ctx context.Context, c *zkclient.Client, p string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		ok, _, w, err := c.ExistsW(ctx, p)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := w.Wait(ctx); err != nil {
			return fmt.Errorf("waiting for %s: %w", p, err)
		}
	}
}

// An ACL opened while everything runs is found at the next reconnection: the operator writes no
// plan (Ready=False, reason ZooKeeperInsecure) and the services keep serving their version;
// locked again and reconnected, the rollout goes on.
func TestTreeOpenedAtRuntimeHaltsTheRollout(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 2})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1"))

	conn, _, err := zk.Connect(zkclient.ParseServers(s.ZKServers), 10*time.Second, zk.WithLogInfo(false))
	must(t, err)
	defer conn.Close()
	must(t, conn.AddAuth("digest", []byte(s.Config.ZKAuth)))
	reconnect := func() {
		t.Helper()
		srv := s.ZooKeeper.Servers[0]
		srv.Stop()
		must(t, srv.Start())
		must(t, srv.WaitReady(ctx, time.Minute))
	}
	_, err = conn.SetACL(s.Layout.Staging(), zk.WorldACL(zk.PermAll), -1)
	must(t, err)
	reconnect()

	setServices(t, s, ctx, "a", service(t, s, "a", "v2"))
	_, err = s.WaitForRD(ctx, "a", time.Minute, "Ready=False ZooKeeperInsecure naming the open znode", func(rd *rkv1alpha1.RollingDeploy) bool {
		c := meta.FindStatusCondition(rd.Status.Conditions, rkv1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == rkv1alpha1.ReasonZooKeeperInsecure &&
			strings.Contains(c.Message, "znode "+s.Layout.Staging())
	})
	must(t, err)
	// No plan for v2 was written, so every node still serves v1.
	admin, err := s.ZK(ctx)
	must(t, err)
	data, _, err := admin.Get(ctx, s.Layout.StagingService("a"))
	must(t, err)
	if strings.Contains(string(data), `"v2"`) {
		t.Fatalf("the operator wrote a plan for v2 into an open tree: %s", data)
	}
	must(t, s.WaitForServiceVersions(ctx, "a", "v1", time.Minute))

	_, err = conn.SetACL(s.Layout.Staging(), []zk.ACL{{Perms: zk.PermRead, Scheme: "world", ID: "anyone"},
		{Perms: zk.PermAll, Scheme: "digest", ID: zkclient.DigestID(s.Config.ZKAuth)}}, -1)
	must(t, err)
	reconnect()
	_, err = s.WaitForReady(ctx, "a", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
}

// The operator and the agents talk to ZooKeeper over TLS only (its secureClientPort, client
// certificates required, certificates generated for the test): a rollout goes through.
func TestRolloutOverTLSToZooKeeper(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 2, ZooKeeperTLS: true})
	for _, a := range s.ManagerArgs() {
		if strings.HasPrefix(a, "--zk-servers=") && strings.Contains(a, s.ZKServers) {
			t.Fatalf("the operator is given the plain port: %s", a)
		}
	}
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1"))
	setServices(t, s, ctx, "a", service(t, s, "a", "v2"))
	_, err := s.WaitForReady(ctx, "a", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
}
