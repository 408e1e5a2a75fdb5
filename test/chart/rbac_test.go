package chart

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// rbacNamespace is the release namespace of the RBAC tests.
const rbacNamespace = "rollkeeper-system"

// leaderElectionID is the Lease the operator replicas compete for (cmd/manager).
const leaderElectionID = "rollkeeper-manager.rollkeeper.io"

// impersonatingKubeconfig writes a copy of the admin kubeconfig at path that acts as user.
func impersonatingKubeconfig(t *testing.T, admin, path, user string) {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		a.Impersonate = user
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

func clientsetFor(t *testing.T, kubeconfig string) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// The chart's RBAC is enough, and is what is used: the chart's ServiceAccounts, ClusterRoles,
// Roles and bindings are applied to the API server, then the real operator (leader-elected, as
// the chart runs it) and the real agents run with kubeconfigs impersonating the chart's
// ServiceAccounts, and a RollingDeploy rolls v1 and then v2 of two services to completion. A
// permission missing from the chart fails the test: the operator cannot read, update or report
// on the RollingDeploy (or win its Lease), an agent cannot read its Node (checked through the
// label cache it writes only after a successful read), and any "forbidden" in their logs fails.
// rbacStack starts a stack without operator and agents, applies the chart's ServiceAccounts and
// RBAC (after drop removes operator ClusterRole rules, if given) and writes kubeconfigs
// impersonating the chart's ServiceAccounts, which the operator and the agents will use.
func rbacStack(t *testing.T, ctx context.Context, nodes int, drop func(rbacv1.PolicyRule) bool) (s *harness.Stack, managerUser, agentUser string) {
	t.Helper()
	const namespace = rbacNamespace
	dir := t.TempDir()
	managerKC := filepath.Join(dir, "manager.kubeconfig")
	agentKC := filepath.Join(dir, "agent.kubeconfig")

	// The kubeconfigs are written once the API server is up; these flags come after the
	// stack's own --kubeconfig, and the last one wins.
	s = harness.StartT(t, ctx, harness.Config{
		Nodes:          nodes,
		SkipOperator:   true,
		SkipAgents:     true,
		RecordServices: []string{"a", "b"},
		ManagerArgs:    []string{"--kubeconfig=" + managerKC, "--leader-elect", "--leader-election-namespace=" + namespace},
		AgentArgs:      []string{"--kubeconfig=" + agentKC},
	})

	objs := render(t, release{name: "rk", namespace: namespace, set: []string{"zookeeper.servers=" + s.ZKServers}})
	var rbac []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			rbac = append(rbac, o)
		}
	}
	if drop != nil {
		role := one(t, rbac, "ClusterRole", "-manager")
		var kept []any
		for _, r := range rulesOf(t, role) {
			if !drop(r) {
				m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&r)
				if err != nil {
					t.Fatal(err)
				}
				kept = append(kept, m)
			}
		}
		if err := unstructured.SetNestedSlice(role.Object, kept, "rules"); err != nil {
			t.Fatal(err)
		}
	}
	apply(t, ctx, s.Client, namespace, rbac)
	if t.Failed() {
		t.FailNow()
	}
	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	managerUser = "system:serviceaccount:" + namespace + ":" + dep.Spec.Template.Spec.ServiceAccountName
	agentUser = "system:serviceaccount:" + namespace + ":" + ds.Spec.Template.Spec.ServiceAccountName
	impersonatingKubeconfig(t, s.Kubeconfig, managerKC, managerUser)
	impersonatingKubeconfig(t, s.Kubeconfig, agentKC, agentUser)
	t.Logf("operator runs as %s, agents as %s", managerUser, agentUser)

	// The impersonation really restricts: neither account is an admin.
	agentCS, managerCS := clientsetFor(t, agentKC), clientsetFor(t, managerKC)
	if _, err := agentCS.CoreV1().Nodes().Get(ctx, harness.NodeName(1), metav1.GetOptions{}); err != nil {
		t.Fatalf("agent account cannot get its Node: %v", err)
	}
	if _, err := agentCS.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent account may list Nodes (err %v): want only get", err)
	}
	if _, err := managerCS.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("operator account may list Secrets (err %v)", err)
	}
	if err := managerCS.CoreV1().Nodes().Delete(ctx, harness.NodeName(1), metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
		t.Fatalf("operator account may delete Nodes (err %v)", err)
	}
	return s, managerUser, agentUser
}

func TestRBACOperatorAndAgentsRunAsChartServiceAccounts(t *testing.T) {
	const (
		nodes     = 3
		namespace = rbacNamespace
	)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s, _, agentUser := rbacStack(t, ctx, nodes, nil)

	for _, n := range s.Nodes {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StartOperator(); err != nil {
		t.Fatal(err)
	}

	// Each agent read its Node through the API server: it caches the labels only then.
	for _, n := range s.Nodes {
		cache := filepath.Join(n.StateDir, "node-labels.json")
		if err := harness.WaitFor(ctx, time.Minute, "label cache of "+n.Name, func(context.Context) (bool, error) {
			b, err := os.ReadFile(cache)
			return err == nil && strings.Contains(string(b), "rollkeeper.io/node"), nil
		}); err != nil {
			t.Fatalf("%v: the agent did not read its Node as %s", err, agentUser)
		}
	}

	// The operator won the Lease in the release namespace (the chart's leader-election Role).
	if err := harness.WaitFor(ctx, time.Minute, "the operator's Lease", func(ctx context.Context) (bool, error) {
		var l coordinationv1.Lease
		if err := s.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: leaderElectionID}, &l); err != nil {
			return false, err
		}
		return l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "", nil
	}); err != nil {
		t.Fatal(err)
	}

	svc := func(name, version string, opts ...harness.ServiceOption) rkv1alpha1.ServiceSpec {
		t.Helper()
		sp, err := s.FixtureService(name, version, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	if err := s.Client.Create(ctx, harness.NewRollingDeploy("ab",
		svc("a", "v1", harness.MinAvailable(2)),
		svc("b", "v1", harness.DependsOn("a"), harness.MinAvailable(2)))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitForReady(ctx, "ab", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if err := s.WaitForServiceVersions(ctx, name, "v1", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateRD(ctx, "ab", func(rd *rkv1alpha1.RollingDeploy) {
		rd.Spec.Services = []rkv1alpha1.ServiceSpec{
			svc("a", "v2", harness.MinAvailable(2)),
			svc("b", "v2", harness.DependsOn("a"), harness.MinAvailable(2)),
		}
	}); err != nil {
		t.Fatal(err)
	}
	rd, err := s.WaitForReady(ctx, "ab", 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if err := s.WaitForServiceVersions(ctx, name, "v2", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if rd.Status.Phase != rkv1alpha1.PhaseComplete || rd.Status.Progress != "6/6" {
		t.Fatalf("phase %s progress %s, want Complete 6/6", rd.Status.Phase, rd.Status.Progress)
	}
	if len(rd.Finalizers) == 0 {
		t.Error("the operator set no finalizer (rollingdeploys/finalizers, update)")
	}

	// The operator's events reached the API server (events create/patch).
	var events corev1.EventList
	if err := s.Client.List(ctx, &events); err != nil {
		t.Fatal(err)
	}
	recorded := 0
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == "RollingDeploy" {
			recorded++
		}
	}
	t.Logf("events about the RollingDeploy: %d", recorded)

	// Nothing was denied along the way.
	for _, p := range append([]*harness.Process{s.Operator}, agentProcesses(s)...) {
		if log := p.Log(); strings.Contains(log, "forbidden") {
			t.Errorf("%s was denied something:\n%s", p.Name, forbiddenLines(log))
		}
	}
}

func agentProcesses(s *harness.Stack) []*harness.Process {
	var ps []*harness.Process
	for _, n := range s.Nodes {
		ps = append(ps, n.Agent)
	}
	return ps
}

func forbiddenLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "forbidden") {
			if len(l) > 400 {
				l = l[:400] + "..."
			}
			out = append(out, l)
		}
	}
	if len(out) > 10 {
		out = out[:10]
	}
	return strings.Join(out, "\n")
}

// The RBAC test can fail: with one rule missing from the operator's ClusterRole (status
// updates), the same stack never gets its RollingDeploy's status written and the operator
// logs the denial. The ClusterRole's cluster-wide leases rule (from the +kubebuilder:rbac
// marker in controllers/) is dropped too: the operator still becomes leader (it reconciles)
// through the chart's namespaced leader-election Role alone.
func TestRBACMissingPermissionIsCaught(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, managerUser, _ := rbacStack(t, ctx, 1, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.Resources, "rollingdeploys/status") || slices.Contains(r.Resources, "leases")
	})
	for _, n := range s.Nodes {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StartOperator(); err != nil {
		t.Fatal(err)
	}
	sp, err := s.FixtureService("a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Client.Create(ctx, harness.NewRollingDeploy("a", sp)); err != nil {
		t.Fatal(err)
	}
	want := `cannot patch resource "rollingdeploys/status"`
	if err := harness.WaitFor(ctx, time.Minute, "the operator's status update denied", func(context.Context) (bool, error) {
		log := s.Operator.Log()
		return strings.Contains(log, "forbidden") && strings.Contains(log, managerUser) && strings.Contains(log, "rollingdeploys/status"), nil
	}); err != nil {
		t.Fatalf("%v (looked for %s)\n%s", err, want, s.Operator.Tail(4096))
	}
	rd, err := s.GetRD(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if harness.Observed(rd) || rd.Status.Phase != "" {
		t.Fatalf("status written without the permission: %s", harness.DescribeStatus(rd))
	}
	if log := s.Operator.Log(); strings.Contains(log, `resource "leases"`) {
		t.Fatalf("leader election was denied with the namespaced Role alone:\n%s", forbiddenLines(log))
	}
	t.Logf("denied as expected: %s", forbiddenLines(s.Operator.Log()))
}
