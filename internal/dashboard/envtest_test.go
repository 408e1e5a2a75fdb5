package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// The tests below run against a real kube-apiserver and etcd (envtest, from KUBEBUILDER_ASSETS
// or bin/), with RBAC on: the dashboard sees and does what the user's credentials allow.
var (
	testEnv *envtest.Environment
	admin   client.Client
	adminCf *rest.Config
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	testEnv = &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		testEnv.BinaryAssetsDirectory = filepath.Join("..", "..", "bin")
		if d := os.Getenv("ROLLKEEPER_BIN_DIR"); d != "" {
			testEnv.BinaryAssetsDirectory = d
		}
	}
	cfg, err := testEnv.Start()
	if err != nil {
		_ = testEnv.Stop()
		fmt.Fprintf(os.Stderr, "start envtest (kube-apiserver and etcd from KUBEBUILDER_ASSETS or bin/): %v\n", err)
		return 1
	}
	defer func() { _ = testEnv.Stop() }()
	scheme, err := NewScheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	adminCf = cfg
	if admin, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func testRD(name string) *v1alpha1.RollingDeploy {
	svc := func(n, v string, deps ...string) v1alpha1.ServiceSpec {
		return v1alpha1.ServiceSpec{Name: n, Version: v, DependsOn: deps,
			Artifact: v1alpha1.ArtifactSpec{URL: "https://artifacts.example/" + n + "-" + v + ".tar.gz", SHA256: strings.Repeat("ab", 32)},
			Quorum:   v1alpha1.QuorumSpec{MinAvailable: intstr.FromInt32(2)},
			Run:      v1alpha1.RunSpec{Command: []string{"/bin/true"}}}
	}
	return &v1alpha1.RollingDeploy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.RollingDeploySpec{Services: []v1alpha1.ServiceSpec{svc("a", "v2"), svc("b", "v2", "a")}}}
}

// create makes rd with a node set of service a and an event, as the operator would, and
// deletes them when the test ends.
func create(t *testing.T, ctx context.Context, rd *v1alpha1.RollingDeploy) *v1alpha1.RollingDeployNodeSet {
	t.Helper()
	if err := admin.Create(ctx, rd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Delete(context.Background(), rd) })
	rd.Status = v1alpha1.RollingDeployStatus{Phase: v1alpha1.PhaseProgressing, Progress: "1/6",
		Services: []v1alpha1.ServiceStatus{{Name: "a", Position: 1, TargetVersion: "v2", Phase: v1alpha1.PhaseProgressing,
			MinAvailable: 2, Total: 3, Online: 3, Updated: 1, Message: "a: 1/3 node(s) on v2"}}}
	if err := admin.Status().Update(ctx, rd); err != nil {
		t.Fatal(err)
	}
	ns := &v1alpha1.RollingDeployNodeSet{ObjectMeta: metav1.ObjectMeta{Name: rd.Name + "-a-0",
		Labels: map[string]string{v1alpha1.LabelRollingDeployUID: string(rd.UID), v1alpha1.LabelService: "a"}},
		RollingDeploy: rd.Name, Service: "a", TargetVersion: "v2", Shard: 0, Shards: 1, TotalNodes: 3,
		Nodes: []v1alpha1.NodeEntry{
			{Name: "node-1", Version: "v2", Online: true, State: v1alpha1.NodeUpdated, Zone: "zone-a"},
			{Name: "node-2", Version: "v1", Online: true, State: v1alpha1.NodeStaged, Zone: "zone-a"},
			{Name: "node-3", Version: "v1", Online: true, State: v1alpha1.NodeRunning, Zone: "zone-b"}}}
	if err := admin.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Delete(context.Background(), ns) })
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: rd.Name + ".1", Namespace: EventNamespace},
		InvolvedObject: corev1.ObjectReference{Kind: "RollingDeploy", APIVersion: v1alpha1.GroupVersion.String(), Name: rd.Name, UID: rd.UID},
		Reason:         "PlanPublished", Message: "published a's plan v2", Type: corev1.EventTypeNormal,
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1, Source: corev1.EventSource{Component: "rollkeeper-manager"}}
	if err := admin.Create(ctx, ev); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Delete(context.Background(), ev) })
	// An event of another kind stays out of the dashboard.
	other := ev.DeepCopy()
	other.Name, other.InvolvedObject.Kind, other.ResourceVersion = rd.Name+".pod", "Pod", ""
	if err := admin.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Delete(context.Background(), other) })
	return ns
}

// start runs the dashboard with cfg and returns its URL; it stops with the test.
func start(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Port: 0, Log: testr.New(t), Ready: func(u string) { urls <- u }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dashboard: %v", err)
		}
	})
	select {
	case u := <-urls:
		return strings.TrimSuffix(u, "/")
	case err := <-done:
		t.Fatalf("dashboard did not start: %v", err)
	}
	return ""
}

func TestDashboardShowsDeploysLive(t *testing.T) {
	ctx := t.Context()
	rd := testRD("live")
	ns := create(t, ctx, rd)
	base := start(t, adminCf)
	s := openStream(t, base)
	objs := map[string]json.RawMessage{}
	m := s.until(objs, func(o map[string]json.RawMessage, m message) bool {
		return m.Meta.Synced && o["rd/live"] != nil && o["ns/live-a-0"] != nil && o["ev/default/live.1"] != nil
	})
	if !m.Meta.Access.Deploys || !m.Meta.Access.NodeSets || !m.Meta.Access.Events || !m.Meta.Access.Patch || m.Meta.Access.Denied != "" {
		t.Fatalf("access of the admin: %+v", m.Meta.Access)
	}
	if _, ok := objs["ev/default/live.pod"]; ok {
		t.Fatal("an event of a Pod reached the dashboard")
	}
	var dv deployView
	if err := json.Unmarshal(objs["rd/live"], &dv); err != nil {
		t.Fatal(err)
	}
	if dv.UID != string(rd.UID) || len(dv.Services) != 2 || dv.Services[1].DependsOn[0] != "a" || dv.Status.Services[0].Message == "" {
		t.Fatalf("RollingDeploy as the page sees it: %+v", dv)
	}
	if strings.Contains(string(objs["rd/live"]), "managedFields") || strings.Contains(string(objs["rd/live"]), "/bin/true") {
		t.Fatalf("the page gets more than it draws: %s", objs["rd/live"])
	}
	var ev eventView
	if err := json.Unmarshal(objs["ev/default/live.1"], &ev); err != nil || ev.Reason != "PlanPublished" || ev.UID != string(rd.UID) {
		t.Fatalf("event as the page sees it: %+v (%v)", ev, err)
	}

	// node-2 fails: the change reaches the page.
	ns.Nodes[1].State, ns.Nodes[1].Message = v1alpha1.NodeFailed, "HealthCheck v2: GET /healthz: 500"
	if err := admin.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	s.until(objs, func(o map[string]json.RawMessage, _ message) bool {
		var v nodeSetView
		return json.Unmarshal(o["ns/live-a-0"], &v) == nil && len(v.Nodes) == 3 && v.Nodes[1].State == v1alpha1.NodeFailed &&
			v.Nodes[1].Message == "HealthCheck v2: GET /healthz: 500" && v.Nodes[1].Zone == "zone-a"
	})
	// The RollingDeploy goes: so do its objects, from the page.
	if err := admin.Delete(ctx, ns); err != nil {
		t.Fatal(err)
	}
	s.until(objs, func(o map[string]json.RawMessage, _ message) bool { return o["ns/live-a-0"] == nil })
}

func TestDashboardActions(t *testing.T) {
	ctx := t.Context()
	rd := testRD("acts")
	create(t, ctx, rd)
	base := start(t, adminCf)
	tok := pageToken(t, base)
	post := func(action string) (int, string) {
		return do(t, "POST", base+"/api/rollingdeploys/acts/"+action, map[string]string{TokenHeader: tok, "Origin": base})
	}
	get := func() *v1alpha1.RollingDeploy {
		got := &v1alpha1.RollingDeploy{}
		if err := admin.Get(ctx, client.ObjectKey{Name: "acts"}, got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if code, body := post("pause"); code != 200 || !strings.Contains(body, "paused") || !get().Spec.Paused {
		t.Fatalf("pause: %d %s; spec.paused=%v", code, body, get().Spec.Paused)
	}
	if code, body := post("resume"); code != 200 || get().Spec.Paused {
		t.Fatalf("resume: %d %s; spec.paused=%v", code, body, get().Spec.Paused)
	}
	if code, body := post("abort"); code != 200 || get().Annotations[v1alpha1.AnnotationAborted] == "" || !get().Spec.Paused {
		t.Fatalf("abort: %d %s; %+v", code, body, get().ObjectMeta.Annotations)
	}
	if code, body := post("resume"); code != 409 || !strings.Contains(body, "aborted") {
		t.Fatalf("resume after abort: %d %s, want 409 saying aborted", code, body)
	}
	if code, body := do(t, "POST", base+"/api/rollingdeploys/ghost/pause", map[string]string{TokenHeader: tok, "Origin": base}); code != 404 {
		t.Fatalf("pause of a missing RollingDeploy: %d %s, want 404", code, body)
	}
}

// user returns the config of a user bound to a ClusterRole with rules.
func user(t *testing.T, ctx context.Context, name string, rules []rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	u, err := testEnv.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}}}
	for _, o := range []client.Object{role, bind} {
		if err := admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.Delete(context.Background(), o) })
	}
	return u.Config()
}

func TestDashboardFollowsRBAC(t *testing.T) {
	ctx := t.Context()
	rd := testRD("rbac")
	create(t, ctx, rd)
	read := []string{"get", "list", "watch"}
	viewer := user(t, ctx, "rk-viewer", []rbacv1.PolicyRule{
		{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"rollingdeploys", "rollingdeploynodesets"}, Verbs: read}})
	// RBAC bindings take effect asynchronously: wait until the viewer may list.
	scheme, _ := NewScheme()
	vc, err := client.New(viewer, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return vc.List(ctx, &v1alpha1.RollingDeployList{}) == nil, nil
	}); err != nil {
		t.Fatalf("viewer never allowed to list: %v", err)
	}
	base := start(t, viewer)
	objs := map[string]json.RawMessage{}
	m := openStream(t, base).until(objs, func(o map[string]json.RawMessage, m message) bool {
		return m.Meta.Synced && o["rd/rbac"] != nil && o["ns/rbac-a-0"] != nil
	})
	a := m.Meta.Access
	if !a.Deploys || !a.NodeSets || a.Events || a.Patch || !strings.Contains(a.Denied, "events") {
		t.Fatalf("viewer's access: %+v", a)
	}
	if code, body := do(t, "POST", base+"/api/rollingdeploys/rbac/pause", map[string]string{TokenHeader: pageToken(t, base), "Origin": base}); code != 403 || !strings.Contains(body, "forbidden") {
		t.Fatalf("viewer's pause: %d %s, want 403 from the API server", code, body)
	}
	got := &v1alpha1.RollingDeploy{}
	if err := admin.Get(ctx, client.ObjectKey{Name: "rbac"}, got); err != nil || got.Spec.Paused {
		t.Fatalf("viewer paused the rollout: %v %v", got.Spec.Paused, err)
	}

	// A user who may not list RollingDeploys gets a clear error, not an empty page.
	nobody := user(t, ctx, "rk-nobody", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: read}})
	err = Run(ctx, nobody, Options{Port: 0, Log: testr.New(t)})
	if err == nil || !strings.Contains(err.Error(), "RBAC does not let you list and watch [RollingDeploys") {
		t.Fatalf("dashboard for a user without access: %v", err)
	}
}
