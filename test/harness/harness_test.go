package harness_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// TestStackWithoutProcesses brings up ZooKeeper, the API server and the artifact server, and
// checks what the agent and operator processes will rely on: the kubeconfig file, the Node
// objects, fixture artifacts over HTTP, the fixture run from an unpacked artifact, and a
// RollingDeploy built by the harness passing the CRD's validation.
func TestStackWithoutProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := harness.StartT(t, ctx, harness.Config{Nodes: 3, SkipOperator: true, SkipAgents: true, RecordServices: []string{"a"}})

	t.Run("kubeconfig", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
		if err != nil {
			t.Fatalf("load kubeconfig: %v", err)
		}
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		v, err := dc.ServerVersion()
		if err != nil {
			t.Fatalf("server version through kubeconfig: %v", err)
		}
		if !strings.HasPrefix(v.GitVersion, "v1.") {
			t.Errorf("server reports version %q; kubectl and helm need a stamped version (hack/install-deps.sh)", v.GitVersion)
		}
		scheme, err := harness.Scheme()
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		var nodes corev1.NodeList
		if err := c.List(ctx, &nodes); err != nil {
			t.Fatalf("list nodes through kubeconfig: %v", err)
		}
		if len(nodes.Items) != 3 {
			t.Fatalf("got %d nodes, want 3", len(nodes.Items))
		}
		for _, n := range nodes.Items {
			if n.Labels["rollkeeper.io/node"] != "true" || n.Labels["kubernetes.io/hostname"] != n.Name {
				t.Errorf("node %s labels %v", n.Name, n.Labels)
			}
		}
		if kubectl, err := exec.LookPath("kubectl"); err == nil {
			out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", s.Kubeconfig, "get", "rd").CombinedOutput()
			if err != nil {
				t.Errorf("kubectl get rd: %v\n%s", err, out)
			}
		}
	})

	t.Run("fixture artifact", func(t *testing.T) {
		a, err := s.FixtureArtifact("a", "v1", false)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := s.FixtureArtifact("a", "v1", false); err != nil || again != a {
			t.Fatalf("second FixtureArtifact = %+v, %v; want the cached %+v", again, err, a)
		}
		resp, err := http.Get(a.URL)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", a.URL, resp.StatusCode, err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != a.SHA256 {
			t.Fatalf("served artifact digest differs from %s", a.SHA256)
		}
		if n := s.Artifacts.Requests(a.Name); n != 1 {
			t.Errorf("Requests(%s) = %d, want 1", a.Name, n)
		}
		s.Artifacts.Fail(a.Name, http.StatusServiceUnavailable)
		if resp, err := http.Get(a.URL); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("injected fault: got %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		s.Artifacts.Fail(a.Name, 0)

		// Unpack into node-1's state dir and run it as the agent would.
		n := s.Node(1)
		dir := filepath.Join(n.StateDir, "a", "v1")
		untar(t, data, dir)
		port, err := s.ServicePort("a")
		if err != nil {
			t.Fatal(err)
		}
		p := &harness.Process{
			Name:    "fixture a on " + n.Name,
			Path:    filepath.Join(dir, harness.FixtureBinary),
			Args:    []string{fmt.Sprintf("--listen=%s:%d", n.Address, port)},
			Env:     []string{"ROLLKEEPER_ARTIFACT_DIR=" + dir},
			LogPath: filepath.Join(s.Dir, "logs", "fixture-test.log"),
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitForServiceVersions(ctx, "a", "v1", 10*time.Second, n.Name); err != nil {
			t.Fatal(err)
		}
		if code, _, err := n.Get(ctx, port, "/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("healthz = %d %v", code, err)
		}
		versions, err := s.ServiceVersions(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(versions["node-2"], "down:") {
			t.Errorf("node-2 runs no fixture but answers %q", versions["node-2"])
		}
		if err := p.Stop(5 * time.Second); err != nil {
			t.Errorf("graceful stop of the fixture: %v", err)
		}

		// A leftover host service is found by its executable's directory.
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		pid := p.Pid()
		if killed := harness.KillUnder(n.StateDir); len(killed) != 1 || killed[0] != pid {
			t.Errorf("KillUnder = %v, want [%d]", killed, pid)
		}
		<-p.Exited()
	})

	t.Run("unhealthy artifact", func(t *testing.T) {
		a, err := s.FixtureArtifact("a", "v3", true)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(a.Path)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		untar(t, data, dir)
		if _, err := os.Stat(filepath.Join(dir, "UNHEALTHY")); err != nil {
			t.Errorf("unhealthy artifact lacks UNHEALTHY: %v", err)
		}
	})

	t.Run("rollingdeploy", func(t *testing.T) {
		a, err := s.FixtureService("a", "v1", harness.MinAvailable(2))
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.FixtureService("b", "v1", harness.DependsOn("a"), harness.FileURL())
		if err != nil {
			t.Fatal(err)
		}
		rd := harness.NewRollingDeploy("demo", a, b)
		if err := s.Client.Create(ctx, rd); err != nil {
			t.Fatalf("the harness's RollingDeploy fails the CRD's validation: %v", err)
		}
		got, err := s.GetRD(ctx, "demo")
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.FailurePolicy != rkv1alpha1.FailurePolicyPause {
			t.Errorf("failurePolicy default = %q", got.Spec.FailurePolicy)
		}
		if err := s.UpdateRD(ctx, "demo", func(rd *rkv1alpha1.RollingDeploy) { rd.Spec.Paused = true }); err != nil {
			t.Fatal(err)
		}
		bad := harness.NewRollingDeploy("bad", a)
		bad.Spec.Services[0].Artifact.SHA256 = "nothex"
		if err := s.Client.Create(ctx, bad); err == nil {
			t.Errorf("a bad sha256 passed the CRD's validation")
		}
	})

	t.Run("recorder", func(t *testing.T) {
		zk, err := s.ZK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range s.Nodes {
			if err := register(ctx, zk, s.Layout, "a", n.Name, "v1"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Recorder.WaitOnline(ctx, "a", 10*time.Second, "3 nodes on v1", func(m map[string]string) bool {
			return len(m) == 3
		}); err != nil {
			t.Fatal(err)
		}
		if err := zk.Delete(ctx, s.Layout.CurrentNode("a", "node-2"), -1); err != nil {
			t.Fatal(err)
		}
		if err := s.Recorder.WaitOnline(ctx, "a", 10*time.Second, "node-2 gone", func(m map[string]string) bool {
			return len(m) == 2
		}); err != nil {
			t.Fatal(err)
		}
		if err := register(ctx, zk, s.Layout, "a", "node-2", "v2"); err != nil {
			t.Fatal(err)
		}
		if err := s.Recorder.WaitOnline(ctx, "a", 10*time.Second, "node-2 on v2", func(m map[string]string) bool {
			return m["node-2"] == "v2"
		}); err != nil {
			t.Fatal(err)
		}
		min, at, missed := s.Recorder.MinOnline("a", time.Time{})
		if min != 0 {
			t.Errorf("MinOnline since the start = %d, want 0 (nobody was online at first)", min)
		}
		first3 := time.Time{}
		for _, snap := range s.Recorder.Snapshots("a", harness.KindCurrent) {
			if snap.Online() == 3 {
				first3 = snap.Time
				break
			}
		}
		min, at, missed = s.Recorder.MinOnline("a", first3)
		if min != 2 || at.Members["node-2"] != "" {
			t.Errorf("MinOnline after all 3 = %d at %v (missed %d), want 2 without node-2\n%s", min, at.Members, missed, s.Recorder.Report("a"))
		}
		hist := s.Recorder.History("a", "node-2")
		var vs []string
		for _, h := range hist {
			vs = append(vs, h.Version)
		}
		if strings.Join(vs, ",") != "v1,,v2" {
			t.Errorf("History(node-2) = %q, want v1,,v2", vs)
		}
		if errs := s.Recorder.Errors(); len(errs) > 0 {
			t.Errorf("recorder errors: %v", errs)
		}
	})
}

func register(ctx context.Context, zk *zkclient.Client, l zklayout.Layout, svc, node, version string) error {
	if err := zk.EnsurePath(ctx, l.CurrentService(svc)); err != nil {
		return err
	}
	data, err := zklayout.Encode(&zklayout.Current{Node: node, Version: version, Health: zklayout.HealthHealthy, Since: time.Now()})
	if err != nil {
		return err
	}
	_, err = zk.Create(ctx, l.CurrentNode(svc, node), data, zkclient.Ephemeral)
	return err
}

// TestRecorderSessionLoss checks that the recorder sees ephemeral registrations vanish when
// their session closes, and survives a ZooKeeper restart by re-arming its watches.
func TestRecorderSessionLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ens, err := zkserver.Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ens.Stop()
	l := zklayout.MustNew("/rk-test")
	rec, err := harness.NewRecorder(ctx, ens.Connect(), l, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Stop()

	agent, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(ens.Connect())})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		if err := register(ctx, agent, l, "svc", n, "v1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.WaitOnline(ctx, "svc", 10*time.Second, "2 online", func(m map[string]string) bool { return len(m) == 2 }); err != nil {
		t.Fatal(err)
	}
	agent.Close()
	if err := rec.WaitOnline(ctx, "svc", 10*time.Second, "0 online after the session closed", func(m map[string]string) bool { return len(m) == 0 }); err != nil {
		t.Fatal(err)
	}

	// Restart the server: the recorder's session survives (data dir kept) and its watch is
	// re-armed, so a new registration is seen.
	s := ens.Servers[0]
	s.Stop()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	agent2, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(ens.Connect())})
	if err != nil {
		t.Fatal(err)
	}
	defer agent2.Close()
	if err := register(ctx, agent2, l, "svc", "n3", "v2"); err != nil {
		t.Fatal(err)
	}
	if err := rec.WaitOnline(ctx, "svc", 20*time.Second, "n3 after a server restart", func(m map[string]string) bool { return m["n3"] == "v2" }); err != nil {
		t.Fatalf("%v\n%s", err, rec.Report("svc"))
	}
	for _, err := range rec.Errors() {
		if !errors.Is(err, zkclient.ErrSessionExpired) {
			t.Logf("recorder error (tolerated across a restart): %v", err)
		}
	}
}

// TestRecorderZxids checks that the recorder dates changes in ZooKeeper's order: a
// registration by its creation's zxid, a departure seen alone by its deletion's zxid. Tests
// order changes of different services by them (the recorder reads each service on its own, so
// its observation times can invert two changes).
func TestRecorderZxids(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ens, err := zkserver.Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ens.Stop()
	l := zklayout.MustNew("/rk-test")
	rec, err := harness.NewRecorder(ctx, ens.Connect(), l, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Stop()
	agent, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(ens.Connect())})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()

	if err := register(ctx, agent, l, "b", "n1", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := rec.WaitOnline(ctx, "b", 10*time.Second, "n1 on b", func(m map[string]string) bool { return m["n1"] == "v1" }); err != nil {
		t.Fatal(err)
	}
	if err := register(ctx, agent, l, "a", "n1", "v2"); err != nil {
		t.Fatal(err)
	}
	_, ast, err := agent.Get(ctx, l.CurrentNode("a", "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Delete(ctx, l.CurrentNode("b", "n1"), -1); err != nil {
		t.Fatal(err)
	}
	_, bst, err := agent.Get(ctx, l.CurrentService("b"))
	if err != nil {
		t.Fatal(err)
	}
	for svc, want := range map[string]string{"a": "v2", "b": ""} {
		if err := rec.WaitOnline(ctx, svc, 10*time.Second, "n1 "+want, func(m map[string]string) bool { return m["n1"] == want }); err != nil {
			t.Fatal(err)
		}
	}
	ha, hb := rec.History("a", "n1"), rec.History("b", "n1")
	if len(ha) != 1 || ha[0].Zxid != ast.Czxid || !ha[0].Exact {
		t.Fatalf("a's history %+v, want v2 at zxid 0x%x, exact", ha, ast.Czxid)
	}
	if len(hb) != 2 || hb[1].Version != "" || hb[1].Zxid != bst.Pzxid || !hb[1].Exact {
		t.Fatalf("b's history %+v, want the departure at zxid 0x%x, exact\n%s", hb, bst.Pzxid, rec.Report("b"))
	}
	if hb[1].Zxid <= ha[0].Zxid {
		t.Fatalf("b's departure (0x%x) ordered before a's registration (0x%x)", hb[1].Zxid, ha[0].Zxid)
	}
}

func untar(t *testing.T, data []byte, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(dir, filepath.Base(h.Name)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// TestNodeLifecycle starts agent processes without an operator and drives the harness's
// process controls: stop, kill, restart.
func TestNodeLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := harness.StartT(t, ctx, harness.Config{Nodes: 2, SkipOperator: true})
	n := s.Node(2)
	if !n.Agent.Running() || n.Address != "127.0.0.3" || n.Name != "node-2" {
		t.Fatalf("node 2: running=%t address=%s name=%s", n.Agent.Running(), n.Address, n.Name)
	}
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	if n.Agent.Running() || n.Agent.ExitErr() == nil {
		t.Fatalf("after Kill: running=%t exit=%v", n.Agent.Running(), n.Agent.ExitErr())
	}
	first := n.Agent.Pid()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if n.Agent.Pid() == first || !n.Agent.Running() {
		t.Fatalf("restart kept pid %d or is not running", first)
	}
	if err := n.Restart(); err != nil {
		t.Fatalf("graceful restart: %v\n%s", err, n.Agent.Tail(4096))
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, n.Agent.Tail(4096))
	}
	if log := n.Agent.Log(); strings.Count(log, "=== harness: start #") != 3 {
		t.Errorf("agent log shows %d starts, want 3:\n%s", strings.Count(log, "=== harness: start #"), log)
	}
	if err := s.StartOperator(); err != nil {
		t.Fatal(err)
	}
	if err := s.Operator.Stop(10 * time.Second); err != nil {
		t.Fatalf("operator stop: %v\n%s", err, s.Operator.Tail(4096))
	}
}
