package controllers

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// The suite runs one real kube-apiserver + etcd (envtest), one real ZooKeeper and one manager
// with the reconciler. Tests run one after the other; each uses its own service names, node
// names and node labels, so they do not see each other's objects.
var (
	k8s      client.Client
	zkServer *zkserver.Ensemble
	// agentZK plays the node agents: it writes current/, staging/ and failures/ children.
	agentZK *zkclient.Client
	layout  = zklayout.MustNew("/rollkeeper-test")
	// reconciler is the manager's reconciler (tests set its testHook).
	reconciler *RollingDeployReconciler
)

// crdPaths are the generated CRDs the API server gets.
var crdPaths = []string{filepath.Join("..", "config", "crd", "bases")}

// waitTimeout bounds every poll; the watches make most waits far shorter.
const waitTimeout = 30 * time.Second

const (
	sha1hex = "1111111111111111111111111111111111111111111111111111111111111111"
	sha2hex = "2222222222222222222222222222222222222222222222222222222222222222"
	sha3hex = "3333333333333333333333333333333333333333333333333333333333333333"
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flag.Parse() // testing.Verbose needs parsed flags
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(zapLevel()),
		zap.StacktraceLevel(zapcore.PanicLevel)))

	dir, err := os.MkdirTemp("", "rollkeeper-controllers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	zkServer, err = zkserver.Start(ctx, dir, 1)
	if err != nil {
		fmt.Fprintf(os.Stderr, "start ZooKeeper: %v\n", err)
		return 1
	}
	defer zkServer.Stop()

	env := &envtest.Environment{
		CRDDirectoryPaths:     crdPaths,
		ErrorIfCRDPathMissing: true,
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		env.BinaryAssetsDirectory = filepath.Join("..", "bin")
	}
	cfg, err := env.Start()
	if err != nil {
		// A failed start (a CRD the API server refuses, say) can leave etcd and kube-apiserver running.
		_ = env.Stop()
		fmt.Fprintf(os.Stderr, "start envtest (kube-apiserver and etcd from KUBEBUILDER_ASSETS or ../bin): %v\n", err)
		return 1
	}
	defer func() { _ = env.Stop() }()

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	dial := func() (*zkclient.Client, error) {
		return zkclient.Dial(ctx, zkclient.Config{Servers: []string{zkServer.Connect()}, SessionTimeout: 15 * time.Second,
			Logger: ctrl.Log.WithName("zk")})
	}
	managerZK, err := dial()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer managerZK.Close()
	agentZK, err = dial()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer agentZK.Close()

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := &RollingDeployReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("rollkeeper-manager"),
		ZK:        managerZK,
		Layout:    layout,
		// Far longer than any wait: status must follow ZooKeeper through watches alone.
		Resync: time.Hour,
	}
	reconciler = r
	if err := r.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		<-mgrDone
	}()
	return m.Run()
}

// zapLevel logs the reconciler's info lines under -v, errors only otherwise.
func zapLevel() zapcore.Level {
	if testing.Verbose() {
		return zapcore.InfoLevel
	}
	return zapcore.ErrorLevel
}

// ---- helpers ----

// waitFor polls cond until it holds or waitTimeout passes; the last reason is reported.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", waitTimeout, what, last)
		}
		<-tick.C
	}
}

type svcOpt func(*v1alpha1.ServiceSpec)

func dependsOn(d ...string) svcOpt { return func(s *v1alpha1.ServiceSpec) { s.DependsOn = d } }
func quorum(q intstr.IntOrString) svcOpt {
	return func(s *v1alpha1.ServiceSpec) { s.Quorum.MinAvailable = q }
}
func artifactSHA(sha string) svcOpt { return func(s *v1alpha1.ServiceSpec) { s.Artifact.SHA256 = sha } }

// service is a valid service spec on the nodes labelled rk-test=<group>.
func service(name, version, group string, opts ...svcOpt) v1alpha1.ServiceSpec {
	s := v1alpha1.ServiceSpec{
		Name:         name,
		Version:      version,
		Artifact:     v1alpha1.ArtifactSpec{URL: "https://artifacts.example/" + name + "-" + version + ".tar.gz", SHA256: sha2hex, Unpack: v1alpha1.UnpackTarGz},
		Quorum:       v1alpha1.QuorumSpec{MinAvailable: intstr.FromInt32(1)},
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"rk-test": group}},
		Run:          v1alpha1.RunSpec{Command: []string{"$(ROLLKEEPER_ARTIFACT_DIR)/rollkeeper-fixture"}},
		HealthCheck:  &v1alpha1.HealthCheckSpec{HTTPGet: &v1alpha1.HTTPGetCheck{Path: "/healthz", Port: 9000}},
	}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func newRD(name string, services ...v1alpha1.ServiceSpec) *v1alpha1.RollingDeploy {
	return &v1alpha1.RollingDeploy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.RollingDeploySpec{Services: services},
	}
}

// createRD creates rd and deletes it (waiting until it is gone) when the test ends.
func createRD(t *testing.T, rd *v1alpha1.RollingDeploy) {
	t.Helper()
	if err := k8s.Create(context.Background(), rd); err != nil {
		t.Fatalf("create RollingDeploy %s: %v", rd.Name, err)
	}
	t.Cleanup(func() { deleteRD(t, rd.Name) })
}

func deleteRD(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	err := k8s.Delete(ctx, &v1alpha1.RollingDeploy{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Fatalf("delete RollingDeploy %s: %v", name, err)
	}
	waitFor(t, "RollingDeploy "+name+" to be gone", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.RollingDeploy{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

func getRD(t *testing.T, name string) *v1alpha1.RollingDeploy {
	t.Helper()
	rd := &v1alpha1.RollingDeploy{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, rd); err != nil {
		t.Fatalf("get RollingDeploy %s: %v", name, err)
	}
	return rd
}

// updateRD applies mutate to the latest copy of the RollingDeploy, retrying on conflicts.
func updateRD(t *testing.T, name string, mutate func(*v1alpha1.RollingDeploy)) {
	t.Helper()
	for range 10 {
		rd := getRD(t, name)
		mutate(rd)
		err := k8s.Update(context.Background(), rd)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("update RollingDeploy %s: %v", name, err)
		}
	}
	t.Fatalf("update RollingDeploy %s: too many conflicts", name)
}

// makeNodes creates Node objects labelled rk-test=<group> and deletes them when the test ends.
func makeNodes(t *testing.T, group string, names ...string) {
	t.Helper()
	for _, n := range names {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"rk-test": group}}}
		if err := k8s.Create(context.Background(), node); err != nil {
			t.Fatalf("create node %s: %v", n, err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), node) })
	}
}

func condition(rd *v1alpha1.RollingDeploy, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(rd.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{Type: typ}
}

// waitCondition waits for a condition with the given status and reason whose message holds
// every one of msgs; it returns the RollingDeploy as last read.
func waitCondition(t *testing.T, name, typ string, status metav1.ConditionStatus, reason string, msgs ...string) *v1alpha1.RollingDeploy {
	t.Helper()
	var rd *v1alpha1.RollingDeploy
	waitFor(t, fmt.Sprintf("%s %s=%s reason %s", name, typ, status, reason), func() (bool, string) {
		rd = getRD(t, name)
		c := condition(rd, typ)
		if c.Status != status || c.Reason != reason {
			return false, fmt.Sprintf("phase %s, %s=%s reason %s: %s", rd.Status.Phase, typ, c.Status, c.Reason, c.Message)
		}
		for _, m := range msgs {
			if !strings.Contains(c.Message, m) {
				return false, fmt.Sprintf("message %q lacks %q", c.Message, m)
			}
		}
		return true, ""
	})
	return rd
}

// waitServiceStatus waits until the named service's status satisfies ok.
func waitServiceStatus(t *testing.T, rdName, svc string, ok func(v1alpha1.ServiceStatus) bool) v1alpha1.ServiceStatus {
	t.Helper()
	var got v1alpha1.ServiceStatus
	waitFor(t, fmt.Sprintf("status of service %s in %s", svc, rdName), func() (bool, string) {
		rd := getRD(t, rdName)
		for _, s := range rd.Status.Services {
			if s.Name == svc {
				got = s
				return ok(s), fmt.Sprintf("%+v", s)
			}
		}
		return false, fmt.Sprintf("no status for %s: %+v", svc, rd.Status)
	})
	return got
}

// ---- ZooKeeper as the agents would write it ----

func encode(t *testing.T, p zklayout.Payload) []byte {
	t.Helper()
	data, err := zklayout.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// register puts node online for svc on version (ephemeral, like an agent).
func register(t *testing.T, svc, node, version string) {
	t.Helper()
	ctx := context.Background()
	if err := agentZK.EnsurePath(ctx, layout.CurrentService(svc)); err != nil {
		t.Fatal(err)
	}
	// An agent registers with its Node's labels (the plan's selector is matched against them).
	var labels map[string]string
	var kn corev1.Node
	if err := k8s.Get(ctx, client.ObjectKey{Name: node}, &kn); err == nil {
		labels = kn.Labels
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	data := encode(t, &zklayout.Current{Node: node, Version: version, Labels: labels, Health: zklayout.HealthHealthy, Since: time.Now()})
	// An existing registration is replaced in one transaction, as an agent re-registers: a
	// delete then a create would let the operator see the node gone in between (and a rollout
	// complete without it).
	p := layout.CurrentNode(svc, node)
	err := agentZK.Multi(ctx, zkclient.DeleteOp(p, -1), zkclient.CreateOp(p, data, zkclient.Ephemeral))
	if errors.Is(err, zkclient.ErrNoNode) {
		_, err = agentZK.Create(ctx, p, data, zkclient.Ephemeral)
	}
	if err != nil {
		t.Fatalf("register %s/%s: %v", svc, node, err)
	}
}

func unregister(t *testing.T, svc, node string) {
	t.Helper()
	if err := agentZK.Delete(context.Background(), layout.CurrentNode(svc, node), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
		t.Fatal(err)
	}
}

// stage queues node in svc's staging queue and returns the child's path.
func stage(t *testing.T, svc, node, version string) string {
	t.Helper()
	data := encode(t, &zklayout.Staged{Node: node, Version: version, State: zklayout.StagedReady, Since: time.Now()})
	p, err := agentZK.Create(context.Background(), layout.StagingPrefix(svc, node), data, zkclient.EphemeralSequential)
	if err != nil {
		t.Fatalf("stage %s/%s: %v", svc, node, err)
	}
	return p
}

// startUpgrade is the agent's quorum step: its staging child turns upgrading and its current
// registration goes, in one transaction.
func startUpgrade(t *testing.T, svc, node, version, stagedPath string) {
	t.Helper()
	data := encode(t, &zklayout.Staged{Node: node, Version: version, State: zklayout.StagedUpgrading, Since: time.Now()})
	if err := agentZK.Multi(context.Background(), zkclient.SetOp(stagedPath, data, 0),
		zkclient.DeleteOp(layout.CurrentNode(svc, node), -1)); err != nil {
		t.Fatalf("start upgrade of %s/%s: %v", svc, node, err)
	}
}

// finishUpgrade re-registers node on version and leaves the staging queue.
func finishUpgrade(t *testing.T, svc, node, version, stagedPath string) {
	t.Helper()
	// One transaction, as the agent does: never seen registered and still upgrading.
	data := encode(t, &zklayout.Current{Node: node, Version: version, Health: zklayout.HealthHealthy, Since: time.Now()})
	if err := agentZK.Multi(context.Background(), zkclient.CreateOp(layout.CurrentNode(svc, node), data, zkclient.Ephemeral),
		zkclient.DeleteOp(stagedPath, -1)); err != nil {
		t.Fatalf("finish upgrade of %s/%s: %v", svc, node, err)
	}
}

func recordFailure(t *testing.T, svc, node, version, kind, reason string) {
	t.Helper()
	ctx := context.Background()
	if err := agentZK.EnsurePath(ctx, layout.FailureService(svc)); err != nil {
		t.Fatal(err)
	}
	data := encode(t, &zklayout.Failure{Node: node, Version: version, Kind: kind, Reason: reason, Time: time.Now()})
	if _, err := agentZK.Create(ctx, layout.Failure(svc, node), data, zkclient.Persistent); err != nil {
		t.Fatalf("record failure %s/%s: %v", svc, node, err)
	}
}

// cleanupZK removes what a test left under its services (current/ stays with its ephemeral
// owners otherwise, releases are persistent).
func cleanupZK(t *testing.T, services ...string) {
	t.Cleanup(func() {
		ctx := context.Background()
		for _, s := range services {
			for _, p := range []string{layout.CurrentService(s), layout.StagingService(s), layout.FailureService(s), layout.ReleaseService(s)} {
				if err := agentZK.DeleteTree(ctx, p); err != nil {
					t.Logf("cleanup %s: %v", p, err)
				}
			}
		}
	})
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	ok, err := agentZK.Exists(context.Background(), p)
	if err != nil {
		t.Fatalf("exists %s: %v", p, err)
	}
	return ok
}

func readPlan(t *testing.T, svc string) (zklayout.Plan, bool) {
	t.Helper()
	data, _, err := agentZK.Get(context.Background(), layout.StagingService(svc))
	if errors.Is(err, zkclient.ErrNoNode) {
		return zklayout.Plan{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var p zklayout.Plan
	if err := zklayout.Decode(data, &p); err != nil {
		t.Fatalf("plan of %s: %v", svc, err)
	}
	return p, true
}

// entries returns the deploy queue entries of RollingDeploy rd in queue order.
func entries(t *testing.T, rd string) []zklayout.DeployEntry {
	t.Helper()
	ctx := context.Background()
	names, _, err := agentZK.Children(ctx, layout.Deploy())
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	ordered, _ := zklayout.SortSeq(names)
	var out []zklayout.DeployEntry
	for _, s := range ordered {
		data, _, err := agentZK.Get(ctx, layout.DeployEntry(s.Child))
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var e zklayout.DeployEntry
		if zklayout.Decode(data, &e) == nil && e.Deploy == rd {
			out = append(out, e)
		}
	}
	return out
}

func entrySeqs(t *testing.T, rd string) []int64 {
	t.Helper()
	names, _, err := agentZK.Children(context.Background(), layout.Deploy())
	if err != nil {
		t.Fatal(err)
	}
	ordered, _ := zklayout.SortSeq(names)
	var out []int64
	for _, s := range ordered {
		data, _, err := agentZK.Get(context.Background(), layout.DeployEntry(s.Child))
		if err != nil {
			continue
		}
		var e zklayout.DeployEntry
		if zklayout.Decode(data, &e) == nil && e.Deploy == rd {
			out = append(out, s.Seq)
		}
	}
	return out
}

func entryServices(es []zklayout.DeployEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Service)
	}
	return out
}

// eventReasons lists the reasons of the events about a RollingDeploy.
func eventReasons(t *testing.T, rd string) []string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == rd && e.Regarding.Kind == "RollingDeploy" {
			out = append(out, e.Reason)
		}
	}
	slices.Sort(out)
	return out
}

func waitEvent(t *testing.T, rd, reason string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("event %s on %s", reason, rd), func() (bool, string) {
		rs := eventReasons(t, rd)
		return slices.Contains(rs, reason), fmt.Sprint(rs)
	})
}
