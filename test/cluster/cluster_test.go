package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/cluster"
	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// ImagesDirEnv overrides where the image archives are read from (default <repo>/bin/images,
// where `make images` writes them).
const ImagesDirEnv = "ROLLKEEPER_IMAGES_DIR"

const (
	release   = "rk"
	namespace = "rollkeeper-e2e"
	imageTag  = "dev"
)

// The whole install path on a real node: a cluster with a kubelet and containerd comes up,
// `helm install` runs the chart with the images `make images` built from the Dockerfile, the
// operator Deployment and the agent DaemonSet become ready, a RollingDeploy installs and then
// upgrades a host service the agent pod runs on the node, the node serves the new version, a
// rollout restart and a kill -9 of the agent leave the service serving (same process, adopted
// by the next agent), and `helm uninstall` leaves no rollkeeper object behind (the host
// service keeps running: removing a fleet tool stops no service).
func TestHelmInstallUpgradesHostServiceOnRealNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	images := imageArchives(t, root)
	bins, err := harness.Build(ctx, harness.FixtureBinary, harness.PluginBinary)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	c, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster"), Images: images, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkTeardown(t, c, filepath.Join(dir, "cluster")) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster diagnostics:\n%s", c.Diagnose())
		}
	})

	zk, err := zkserver.Start(ctx, filepath.Join(dir, "zk"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(zk.Stop)
	origin, err := harness.NewArtifactServer(filepath.Join(dir, "origin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = origin.Close() })

	ports, err := zkserver.FreePorts(7)
	if err != nil {
		t.Fatal(err)
	}
	servicePort := ports[5]
	stateDir := filepath.Join(dir, "agent-state")
	// Host services outlive their agent (and the release): whatever happens, stop this one.
	t.Cleanup(func() {
		if _, err := readServiceProc(stateDir, "web"); err == nil {
			stopService(t, stateDir, "web")
		}
	})
	valuesFile := filepath.Join(dir, "values.yaml")
	writeValues(t, valuesFile, c, zk.Connect(), stateDir, ports)

	// helm install, and the operator and the agent running on the node.
	helm(t, ctx, c, "install", release, filepath.Join(root, "charts", "rollkeeper"),
		"--namespace", namespace, "--create-namespace", "--values", valuesFile)
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_, _ = runHelm(context.Background(), c, "uninstall", release, "--namespace", namespace)
		}
	})
	waitWorkloadsReady(t, ctx, c)

	// A RollingDeploy installs v1 of a host service on the node, then upgrades it to v2.
	rd := harness.NewRollingDeploy("web", fixtureService(t, origin, bins, "web", "v1", servicePort))
	if err := c.Client.Create(ctx, rd); err != nil {
		t.Fatalf("create RollingDeploy: %v", err)
	}
	url := fmt.Sprintf("http://%s:%d/version", c.NodeIP, servicePort)
	waitReady(t, ctx, c, "web")
	waitServes(t, ctx, url, "v1")

	v2 := fixtureService(t, origin, bins, "web", "v2", servicePort)
	err = harness.WaitFor(ctx, 30*time.Second, "update of RollingDeploy web", func(ctx context.Context) (bool, error) {
		cur := &rkv1alpha1.RollingDeploy{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: "web"}, cur); err != nil {
			return false, err
		}
		cur.Spec.Services = []rkv1alpha1.ServiceSpec{v2}
		return c.Client.Update(ctx, cur) == nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := waitReady(t, ctx, c, "web")
	waitServes(t, ctx, url, "v2")
	if sv := harness.ServiceStatus(got, "web"); sv == nil || sv.Updated != 1 || sv.Total != 1 {
		t.Errorf("service status after the upgrade: %s", harness.DescribeStatus(got))
	}
	t.Logf("node %s serves %s after the upgrade; %s", c.NodeName, "v2", harness.DescribeStatus(got))

	// kubectl rollkeeper, with the user's kubeconfig, shows the node on v2.
	out, err := exec.CommandContext(ctx, bins[harness.PluginBinary], "status", "web", "--kubeconfig", c.Kubeconfig).CombinedOutput()
	if err != nil || !strings.Contains(string(out), c.NodeName) || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(c.NodeName)+`\s+v2\s+yes\s+Updated`).Match(out) {
		t.Errorf("kubectl rollkeeper status web: %v\n%s", err, out)
	} else {
		t.Logf("kubectl rollkeeper status web:\n%s", out)
	}

	// What Prometheus scrapes from the installed pods (host network: node ports) agrees. The
	// operator's metrics are HTTPS, for a ServiceAccount bound to the chart's metrics-reader role.
	// Prometheus' ServiceAccount lives in its own namespace: the release's must be empty after
	// helm uninstall.
	token, err := harness.ServiceAccountToken(ctx, c.Client, namespace+"-monitoring", "prometheus", release+"-rollkeeper-metrics-reader")
	if err != nil {
		t.Fatal(err)
	}
	_, err = harness.WaitScrapeAs(ctx, fmt.Sprintf("https://127.0.0.1:%d", ports[1]), token, time.Minute, "operator metrics after the upgrade", func(s harness.Samples) string {
		l := []string{"rollingdeploy=web", "service=web"}
		if v, _ := s.Get("rollkeeper_rollout_progress_ratio", l...); v != 1 {
			return fmt.Sprintf("progress ratio %v, want 1", v)
		}
		if v, _ := s.Get("rollkeeper_zookeeper_session_state"); v != 1 {
			return fmt.Sprintf("ZooKeeper session state %v, want 1", v)
		}
		return ""
	})
	if err != nil {
		t.Error(err)
	}
	// The agent's metrics bind the node's address (not every interface of the host network).
	_, err = harness.WaitScrape(ctx, net.JoinHostPort(c.NodeIP, strconv.Itoa(ports[6])), time.Minute, "agent metrics after the upgrade", func(s harness.Samples) string {
		if v, _ := s.Get("rollkeeper_agent_service_info", "service=web", "version=v2"); v != 1 {
			return fmt.Sprintf("service info of web v2 %v, want 1", v)
		}
		if v, _ := s.Get("rollkeeper_agent_service_up", "service=web"); v != 1 {
			return fmt.Sprintf("service up %v, want 1", v)
		}
		return ""
	})
	if err != nil {
		t.Error(err)
	}

	checkAgentRestartsKeepService(t, ctx, c, zk.Connect(), stateDir, filepath.Join(dir, "cluster", "pod-logs"), url, "v2")

	checkDefaultRolesAsUsers(t, ctx, c, bins[harness.PluginBinary], dir)

	// Uninstall: the RollingDeploy goes first (its finalizer needs the operator), then the
	// release. Nothing of rollkeeper stays: objects nor pods.
	if err := c.Client.Delete(ctx, got); err != nil {
		t.Fatalf("delete RollingDeploy: %v", err)
	}
	err = harness.WaitFor(ctx, time.Minute, "RollingDeploy web deleted", func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKey{Name: "web"}, &rkv1alpha1.RollingDeploy{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The per-node mirror goes with its RollingDeploy (owner reference, garbage collector).
	err = harness.WaitFor(ctx, time.Minute, "RollingDeployNodeSets garbage-collected", func(ctx context.Context) (bool, error) {
		l := &rkv1alpha1.RollingDeployNodeSetList{}
		if err := c.Client.List(ctx, l); err != nil {
			return false, err
		}
		return len(l.Items) == 0, nil
	})
	if err != nil {
		t.Error(err)
	}
	helm(t, ctx, c, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "2m")
	uninstalled = true
	checkNothingLeft(t, ctx, c)
	// The host service outlives rollkeeper too: uninstalling a fleet tool stops no service.
	if got, err := httpGet(ctx, url); err != nil || got != "v2" {
		t.Errorf("host service after helm uninstall: %q %v, want it still serving v2", got, err)
	}
	stopService(t, stateDir, "web")
}

// stopService stops the host service the exec backend recorded under stateDir (SIGTERM to its
// process group, then SIGKILL), checking the recorded start time first.
func stopService(t *testing.T, stateDir, svc string) {
	t.Helper()
	p, err := readServiceProc(stateDir, svc)
	if err != nil {
		t.Errorf("record of %s: %v", svc, err)
		return
	}
	if st, ok := startTime(p.PID); !ok || st != p.StartTime {
		return
	}
	_ = syscall.Kill(-p.PID, syscall.SIGTERM)
	err = harness.WaitFor(context.Background(), 30*time.Second, "host service "+svc+" stopped", func(context.Context) (bool, error) {
		st, ok := startTime(p.PID)
		return !ok || st != p.StartTime, nil
	})
	if err != nil {
		t.Errorf("%v; killing it", err)
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	}
}

func imageArchives(t *testing.T, root string) []string {
	t.Helper()
	d := os.Getenv(ImagesDirEnv)
	if d == "" {
		d = filepath.Join(root, "bin", "images")
	}
	var out []string
	for _, n := range []string{"rollkeeper-manager.tar", "rollkeeper-agent.tar", "pause.tar"} {
		p := filepath.Join(d, n)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("image archive %s missing (run `make images`): %v", p, err)
		}
		out = append(out, p)
	}
	return out
}

// writeValues writes the chart values for this node: the images imported into containerd
// (never pulled), one operator replica, operator and agent on the host network with free
// ports, and the API server's real address since no kube-proxy serves the kubernetes Service.
func writeValues(t *testing.T, path string, c *cluster.Cluster, zkServers, stateDir string, ports []int) {
	t.Helper()
	apiEnv := []map[string]string{
		{"name": "KUBERNETES_SERVICE_HOST", "value": c.APIHost},
		{"name": "KUBERNETES_SERVICE_PORT", "value": c.APIPort},
	}
	values := map[string]any{
		"zookeeper": map[string]any{"servers": zkServers, "root": "/rollkeeper-cluster-e2e", "sessionTimeout": "6s"},
		"image": map[string]any{
			"manager":    map[string]any{"repository": "rollkeeper-manager", "tag": imageTag},
			"agent":      map[string]any{"repository": "rollkeeper-agent", "tag": imageTag},
			"pullPolicy": "Never",
		},
		"operator": map[string]any{
			"replicas": 1, "hostNetwork": true, "logLevel": "debug",
			"p2pPort": ports[0], "metricsPort": ports[1], "healthPort": ports[2],
			"extraEnv": apiEnv,
			// The origin is the test's artifact server on 127.0.0.1 (the operator is on the host
			// network): loopback origins are refused unless opted in.
			"extraArgs": []string{"--seeder-allow-origin-cidrs=127.0.0.0/8"},
		},
		"agent": map[string]any{
			"stateDir": stateDir, "logLevel": "debug",
			"p2pPort": ports[3], "healthPort": ports[4], "metricsPort": ports[6],
			"extraEnv": apiEnv,
		},
	}
	b, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fixtureService(t *testing.T, origin *harness.ArtifactServer, bins map[string]string, svc, version string, port int) rkv1alpha1.ServiceSpec {
	t.Helper()
	data, err := harness.FixtureTarGz(bins[harness.FixtureBinary], version, false)
	if err != nil {
		t.Fatal(err)
	}
	a, err := origin.Put(svc+"-"+version+".tar.gz", data)
	if err != nil {
		t.Fatal(err)
	}
	sp := harness.FixtureServiceSpec(svc, version, a.URL, a.SHA256, port)
	// One node: a quorum of one would never let it stop for the upgrade.
	sp.Quorum.MinAvailable = intstr.FromInt32(0)
	return sp
}

func runHelm(ctx context.Context, c *cluster.Cluster, args ...string) (string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", "helm"), append(args, "--kubeconfig", c.Kubeconfig)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Keep helm's caches and config out of the user's home.
	home := filepath.Join(os.TempDir(), "rollkeeper-cluster-helm")
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	err = cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func helm(t *testing.T, ctx context.Context, c *cluster.Cluster, args ...string) {
	t.Helper()
	out, err := runHelm(ctx, c, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm %s:\n%s", args[0], out)
}

// waitWorkloadsReady waits for the operator Deployment to be available and the agent
// DaemonSet's pod on the node to be ready.
func waitWorkloadsReady(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	t.Helper()
	start := time.Now()
	dep, ds := &appsv1.Deployment{}, &appsv1.DaemonSet{}
	err := harness.WaitFor(ctx, 3*time.Minute, "operator Deployment available and agent DaemonSet ready", func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-rollkeeper-manager"}, dep); err != nil {
			return false, err
		}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-rollkeeper-agent"}, ds); err != nil {
			return false, err
		}
		return dep.Status.AvailableReplicas == 1 && ds.Status.DesiredNumberScheduled == 1 && ds.Status.NumberReady == 1, nil
	})
	if err != nil {
		t.Fatalf("%v\ndeployment status: %+v\ndaemonset status: %+v\npods:\n%s", err, dep.Status, ds.Status, describePods(ctx, c))
	}
	t.Logf("operator and agent ready %s after helm install", time.Since(start).Round(time.Millisecond))
}

func describePods(ctx context.Context, c *cluster.Cluster) string {
	pods := &corev1.PodList{}
	if err := c.Client.List(ctx, pods, client.InNamespace(namespace)); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "  %s phase=%s node=%s", p.Name, p.Status.Phase, p.Spec.NodeName)
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, " [%s ready=%v restarts=%d state=%+v]", cs.Name, cs.Ready, cs.RestartCount, cs.State)
		}
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue {
				fmt.Fprintf(&b, " %s=%s(%s)", cond.Type, cond.Status, cond.Message)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func waitReady(t *testing.T, ctx context.Context, c *cluster.Cluster, name string) *rkv1alpha1.RollingDeploy {
	t.Helper()
	rd := &rkv1alpha1.RollingDeploy{}
	err := harness.WaitFor(ctx, 3*time.Minute, "RollingDeploy "+name+" Ready", func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, rd); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(rd.Status.Conditions, rkv1alpha1.ConditionReady)
		return harness.Observed(rd) && cond != nil && cond.Status == metav1.ConditionTrue, nil
	})
	if err != nil {
		t.Fatalf("%v\nlast status: %s\npods:\n%s", err, harness.DescribeStatus(rd), describePods(ctx, c))
	}
	return rd
}

func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

func waitServes(t *testing.T, ctx context.Context, url, version string) {
	t.Helper()
	var last string
	err := harness.WaitFor(ctx, time.Minute, url+" to serve "+version, func(ctx context.Context) (bool, error) {
		got, err := httpGet(ctx, url)
		last = got
		return got == version, err
	})
	if err != nil {
		t.Fatalf("%v (last answer %q)", err, last)
	}
}

// checkDefaultRolesAsUsers shows the chart's roles for people at work: the controller manager's
// clusterrole-aggregation controller folds the viewer role into the default view role, so a user
// bound cluster-wide to view can run `kubectl rollkeeper status` but not pause, and a user bound
// to the chart's deployer role (root on the selected nodes, aggregated nowhere) can pause and
// resume. The users are impersonated through their kubeconfigs.
func checkDefaultRolesAsUsers(t *testing.T, ctx context.Context, c *cluster.Cluster, plugin, dir string) {
	t.Helper()
	users := map[string]string{"rk-e2e-viewer": "view", "rk-e2e-editor": release + "-rollkeeper-deployer"}
	kubeconfigs := map[string]string{}
	for user, role := range users {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
		}
		if err := c.Client.Create(ctx, crb); err != nil {
			t.Fatalf("bind %s to %s: %v", user, role, err)
		}
		t.Cleanup(func() { _ = c.Client.Delete(context.Background(), crb) })
		cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		for _, ai := range cfg.AuthInfos {
			ai.Impersonate = user
		}
		kubeconfigs[user] = filepath.Join(dir, user+".kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, kubeconfigs[user]); err != nil {
			t.Fatal(err)
		}
	}
	run := func(user string, args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, plugin, append(args, "--kubeconfig", kubeconfigs[user])...).CombinedOutput()
		return string(out), err
	}

	// Aggregation is asynchronous: wait until view carries the rules.
	err := harness.WaitFor(ctx, time.Minute, "kubectl rollkeeper status as a user bound to view", func(ctx context.Context) (bool, error) {
		out, err := run("rk-e2e-viewer", "status", "web")
		return err == nil && strings.Contains(out, c.NodeName), nil
	})
	if err != nil {
		out, _ := run("rk-e2e-viewer", "status", "web")
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := run("rk-e2e-viewer", "pause", "web"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("kubectl rollkeeper pause as a user bound to view: want forbidden, got %v\n%s", err, out)
	}
	paused := func() bool {
		rd := &rkv1alpha1.RollingDeploy{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: "web"}, rd); err != nil {
			t.Fatal(err)
		}
		return rd.Spec.Paused
	}
	if paused() {
		t.Error("RollingDeploy web paused by a user bound to view")
	}
	err = harness.WaitFor(ctx, time.Minute, "kubectl rollkeeper pause as a user bound to the deployer role", func(ctx context.Context) (bool, error) {
		_, err := run("rk-e2e-editor", "pause", "web")
		return err == nil, nil
	})
	if err != nil {
		out, _ := run("rk-e2e-editor", "pause", "web")
		t.Fatalf("%v\n%s", err, out)
	}
	if !paused() {
		t.Error("RollingDeploy web not paused after kubectl rollkeeper pause as a user bound to the deployer role")
	}
	if out, err := run("rk-e2e-editor", "resume", "web"); err != nil || paused() {
		t.Errorf("kubectl rollkeeper resume as a user bound to the deployer role: %v\n%s", err, out)
	}
	// The deployer may dry-run a manifest: plan -f reads the Nodes' labels, which the role
	// grants (view does not).
	rd := &rkv1alpha1.RollingDeploy{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "web"}, rd); err != nil {
		t.Fatal(err)
	}
	manifest := &rkv1alpha1.RollingDeploy{TypeMeta: metav1.TypeMeta{APIVersion: rkv1alpha1.GroupVersion.String(), Kind: "RollingDeploy"},
		ObjectMeta: metav1.ObjectMeta{Name: rd.Name}, Spec: rd.Spec}
	data, err := yaml.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "web.yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("rk-e2e-editor", "plan", "-f", file); err != nil || !strings.Contains(out, c.NodeName) {
		t.Errorf("kubectl rollkeeper plan -f as a user bound to the deployer role: %v\n%s", err, out)
	}
	if out, err := run("rk-e2e-viewer", "plan", "-f", file); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("kubectl rollkeeper plan -f as a user bound to view: want forbidden (nodes), got %v\n%s", err, out)
	}
}

// checkNothingLeft lists what a release could leave: its namespaced objects (but what every
// namespace has: the default ServiceAccount and the root CA ConfigMap; and Events, which the
// API server expires) and its cluster-wide RBAC. The CRD stays by helm's design (crds/ is
// never deleted), which the README says.
func checkNothingLeft(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	t.Helper()
	err := harness.WaitFor(ctx, 2*time.Minute, "no rollkeeper object left after helm uninstall", func(ctx context.Context) (bool, error) {
		left, err := leftovers(ctx, c)
		if err != nil {
			return false, err
		}
		if len(left) > 0 {
			return false, fmt.Errorf("left: %s", strings.Join(left, ", "))
		}
		return true, nil
	})
	if err != nil {
		t.Error(err)
	}
	if err := c.Client.List(ctx, &rkv1alpha1.RollingDeployList{}); err != nil {
		t.Errorf("the CRD should stay after helm uninstall (crds/ is never deleted): %v", err)
	}
}

func leftovers(ctx context.Context, c *cluster.Cluster) ([]string, error) {
	var left []string
	lists := map[string]client.ObjectList{
		"Pod": &corev1.PodList{}, "Deployment": &appsv1.DeploymentList{}, "ReplicaSet": &appsv1.ReplicaSetList{},
		"DaemonSet": &appsv1.DaemonSetList{}, "ControllerRevision": &appsv1.ControllerRevisionList{},
		"Service": &corev1.ServiceList{}, "ServiceAccount": &corev1.ServiceAccountList{},
		"ConfigMap": &corev1.ConfigMapList{}, "Secret": &corev1.SecretList{},
		"Role": &rbacv1.RoleList{}, "RoleBinding": &rbacv1.RoleBindingList{}, "Lease": &coordinationv1.LeaseList{},
	}
	for kind, l := range lists {
		if err := c.Client.List(ctx, l, client.InNamespace(namespace)); err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			o := it.(client.Object)
			if (kind == "ServiceAccount" && o.GetName() == "default") || (kind == "ConfigMap" && o.GetName() == "kube-root-ca.crt") {
				continue
			}
			// The generated ZooKeeper credentials and signing key are kept on purpose
			// (helm.sh/resource-policy: keep): the tree in ZooKeeper stays locked to the one and
			// signed with the other, and a new install reuses them.
			kept := o.GetName() == release+"-rollkeeper-zk-auth" || o.GetName() == release+"-rollkeeper-signing"
			if kind == "Secret" && kept && o.GetAnnotations()["helm.sh/resource-policy"] == "keep" {
				continue
			}
			left = append(left, kind+" "+namespace+"/"+o.GetName())
		}
	}
	sel := client.MatchingLabels{"app.kubernetes.io/instance": release}
	crs, crbs := &rbacv1.ClusterRoleList{}, &rbacv1.ClusterRoleBindingList{}
	if err := c.Client.List(ctx, crs, sel); err != nil {
		return nil, err
	}
	if err := c.Client.List(ctx, crbs, sel); err != nil {
		return nil, err
	}
	for _, o := range crs.Items {
		left = append(left, "ClusterRole "+o.Name)
	}
	for _, o := range crbs.Items {
		left = append(left, "ClusterRoleBinding "+o.Name)
	}
	return left, nil
}

// checkTeardown stops the cluster and checks the host is as before: no mounts under its
// directory, no pod cgroups, the sysctls kubelet changed restored.
func checkTeardown(t *testing.T, c *cluster.Cluster, dir string) {
	if err := c.Stop(); err != nil {
		t.Errorf("teardown: %v", err)
	}
	if mps, err := cluster.MountsUnder(dir); err != nil || len(mps) > 0 {
		t.Errorf("mounts left under %s: %v %v", dir, mps, err)
	}
	if cgs, err := cluster.PodCgroups(); err != nil || len(cgs) > 0 {
		t.Errorf("pod cgroups left: %v %v", cgs, err)
	}
	if added, err := cluster.KubeChainsAdded(c.KubeChains()); err != nil || len(added) > 0 {
		t.Errorf("iptables chains left: %v %v", added, err)
	}
	for k, want := range c.Sysctls() {
		b, err := os.ReadFile("/proc/sys/" + k)
		if got := strings.TrimSpace(string(b)); err != nil || got != want {
			t.Errorf("sysctl %s = %q after teardown, want %q (%v)", k, got, want, err)
		}
	}
}
