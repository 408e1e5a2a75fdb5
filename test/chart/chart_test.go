// Package chart tests how rollkeeper is installed: the Helm chart (charts/rollkeeper) and the
// kustomize tree (config/). It runs the real helm (bin/helm, installed by hack/install-deps.sh)
// and applies what it renders to a real kube-apiserver (envtest); the RBAC test runs the real
// operator and agents as the chart's ServiceAccounts (impersonated), so a missing permission
// fails a rollout.
package chart

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/rollkeeper/rollkeeper/test/harness"
)

func TestMain(m *testing.M) {
	code := harness.Main(m)
	stopSharedControlPlane()
	os.Exit(code)
}

// kubeVersion is what helm renders for (the chart requires >= 1.30; helm's default is 1.20).
const kubeVersion = "1.37.2"

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// helmBin is bin/helm. A missing helm fails the test: make test installs it (hack/install-deps.sh).
func helmBin(t testing.TB) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("helm is missing (%v): run hack/install-deps.sh helm (make deps does)", err)
	}
	return p
}

// runHelm runs helm in the repository root with its own config and cache directories.
func runHelm(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBin(t), args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// release is one way of rendering the chart.
type release struct {
	name, namespace string
	valuesFiles     []string // relative to test/chart
	set             []string
}

var (
	defaultRelease = release{name: "rk", namespace: "rk-default", set: []string{"zookeeper.servers=zk:2181"}}
	customRelease  = release{name: "custom", namespace: "rk-custom", valuesFiles: []string{"testdata/custom-values.yaml"}}
)

func (r release) helmArgs(t testing.TB) []string {
	var args []string
	for _, f := range r.valuesFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", abs)
	}
	for _, s := range r.set {
		args = append(args, "--set", s)
	}
	return append(args, "--kube-version", kubeVersion)
}

// render runs helm template (CRDs included) and returns the objects.
func render(t testing.TB, r release) []*unstructured.Unstructured {
	t.Helper()
	args := append([]string{"template", r.name, "charts/rollkeeper", "--namespace", r.namespace, "--include-crds"}, r.helmArgs(t)...)
	out, stderr, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	objs, err := decodeObjects([]byte(out))
	if err != nil {
		t.Fatalf("helm template output: %v\n%s", err, out)
	}
	return objs
}

// decodeObjects splits a multi-document YAML stream into objects.
func decodeObjects(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("object without kind, apiVersion or name: %v", m)
		}
		objs = append(objs, u)
	}
}

func byKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the only object of kind whose name ends with suffix.
func one(t testing.TB, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range byKind(objs, kind) {
		if strings.HasSuffix(o.GetName(), suffix) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s named *%s, found %d", kind, suffix, len(found))
	}
	return found[0]
}

// convert turns u into the typed object out.
func convert(t testing.TB, u *unstructured.Unstructured, out any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// generatedManagerRules are the rules of config/rbac/role.yaml (controller-gen's output).
func generatedManagerRules(t testing.TB) []rbacv1.PolicyRule {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(bytes.TrimPrefix(b, []byte("---\n")), &role); err != nil {
		t.Fatalf("config/rbac/role.yaml: %v", err)
	}
	if len(role.Rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	return role.Rules
}

// rulesOf returns the rules of a ClusterRole or Role.
func rulesOf(t testing.TB, u *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	var r rbacv1.ClusterRole // a Role has the same rules field
	convert(t, u, &r)
	return r.Rules
}

// checkNoWildcards fails on any "*" verb, resource or API group in the RBAC objects.
func checkNoWildcards(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	n := 0
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
			continue
		}
		n++
		for i, r := range rulesOf(t, o) {
			for _, list := range [][]string{r.Verbs, r.Resources, r.APIGroups, r.ResourceNames, r.NonResourceURLs} {
				for _, v := range list {
					if strings.Contains(v, "*") {
						t.Errorf("%s %s rule %d has a wildcard %q: %+v", o.GetKind(), o.GetName(), i, v, r)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Error("no ClusterRole or Role rendered")
	}
}

func TestHelmLint(t *testing.T) {
	for _, r := range []release{defaultRelease, customRelease} {
		t.Run(r.name, func(t *testing.T) {
			args := append([]string{"lint", "charts/rollkeeper", "--strict", "--namespace", r.namespace}, r.helmArgs(t)...)
			out, stderr, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
			}
		})
	}
}

// The defaults render what the chart promises.
func TestTemplateDefaults(t *testing.T) {
	objs := render(t, defaultRelease)
	checkNoWildcards(t, objs)
	if got := byKind(objs, "ServiceMonitor"); len(got) != 0 {
		t.Errorf("ServiceMonitor rendered by default: %v", got)
	}
	var crds []string
	for _, o := range byKind(objs, "CustomResourceDefinition") {
		crds = append(crds, o.GetName())
	}
	slices.Sort(crds)
	if !slices.Equal(crds, []string{"rollingdeploynodesets.rollkeeper.io", "rollingdeploys.rollkeeper.io"}) {
		t.Errorf("want the RollingDeploy and RollingDeployNodeSet CRDs with --include-crds, got %v", crds)
	}
	one(t, objs, "Service", "-manager-metrics")
	// The leader-election Lease belongs to the release, so helm uninstall removes it.
	one(t, objs, "Lease", "rollkeeper-manager.rollkeeper.io")

	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	if dep.Spec.Template.Spec.HostNetwork {
		t.Error("operator on the host network by default")
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("operator replicas %v, want 2", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("operator pod is not runAsNonRoot")
	}
	c := pod.Containers[0]
	for _, a := range []string{"--leader-elect", "--zk-servers=zk:2181", "--leader-election-namespace=rk-default",
		"--health-probe-bind-address=:8081", "--p2p-host=$(POD_IP)", "--p2p-port=6881", "--seeder-dir=/var/lib/rollkeeper-seeder",
		"--seeder-max-bytes=1792Mi"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("operator args %v lack %s", c.Args, a)
		}
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("operator root filesystem is not read-only")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("operator probes: liveness %+v readiness %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("operator resources: %+v", c.Resources)
	}
	if !hasEnvField(c.Env, "POD_IP", "status.podIP") {
		t.Errorf("operator env lacks POD_IP from status.podIP: %+v", c.Env)
	}
	if !hasPort(c.Ports, 6881) || !hasPort(c.Ports, 8080) || !hasPort(c.Ports, 8081) {
		t.Errorf("operator ports: %+v", c.Ports)
	}
	if !mountsEmptyDir(pod, c, "/var/lib/rollkeeper-seeder") {
		t.Error("seeder dir is not an emptyDir")
	}

	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	apod := ds.Spec.Template.Spec
	if !apod.HostNetwork || !apod.HostPID {
		t.Error("agent is not in the host's network and PID namespaces")
	}
	if apod.PriorityClassName != "system-node-critical" {
		t.Errorf("agent priorityClassName %q", apod.PriorityClassName)
	}
	if len(apod.Tolerations) != 1 || apod.Tolerations[0].Operator != corev1.TolerationOpExists || apod.Tolerations[0].Key != "" {
		t.Errorf("agent does not tolerate every taint: %+v", apod.Tolerations)
	}
	ac := apod.Containers[0]
	if ac.SecurityContext == nil || ac.SecurityContext.Privileged == nil || !*ac.SecurityContext.Privileged {
		t.Error("agent is not privileged")
	}
	if !hasEnvField(ac.Env, "NODE_NAME", "spec.nodeName") || !hasEnvField(ac.Env, "NODE_ADDRESS", "status.hostIP") {
		t.Errorf("agent env: %+v", ac.Env)
	}
	for _, a := range []string{"--node-name=$(NODE_NAME)", "--node-address=$(NODE_ADDRESS)", "--state-dir=/var/lib/rollkeeper", "--zk-root=/rollkeeper"} {
		if !slices.Contains(ac.Args, a) {
			t.Errorf("agent args %v lack %s", ac.Args, a)
		}
	}
	// state, the host's /run, the ZooKeeper credentials and the trusted keys.
	if len(apod.Volumes) != 4 || apod.Volumes[0].HostPath == nil || apod.Volumes[0].HostPath.Path != "/var/lib/rollkeeper" {
		t.Errorf("agent state dir is not a hostPath: %+v", apod.Volumes)
	}
	// backend auto: the host's /run (present on every host, with or without systemd) is where
	// the agent looks for systemd; exec services leave the pod's cgroups.
	if v := apod.Volumes[1]; v.HostPath == nil || v.HostPath.Path != "/run" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
		t.Errorf("agent lacks the host's /run: %+v", apod.Volumes)
	}
	for _, a := range []string{"--backend=auto", "--exec-leave-cgroup=true", "--systemd-socket=/host/run/systemd/private"} {
		if !slices.Contains(ac.Args, a) {
			t.Errorf("agent args %v lack %s", ac.Args, a)
		}
	}
	if ac.Resources.Limits.Memory() != nil && !ac.Resources.Limits.Memory().IsZero() {
		t.Errorf("agent has a memory limit by default (its host services share its cgroup): %+v", ac.Resources)
	}
	// Secure by default: credentials generated into a kept Secret, mounted as a file into both.
	sec := one(t, objs, "Secret", "-zk-auth")
	if sec.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the credentials Secret is not kept on uninstall: %v", sec.GetAnnotations())
	}
	data, _, _ := unstructured.NestedString(sec.Object, "data", "auth")
	if cred, err := base64.StdEncoding.DecodeString(data); err != nil || !regexp.MustCompile(`^rollkeeper:[A-Za-z0-9]{32}$`).Match(cred) {
		t.Errorf("generated credentials %q (%v): want rollkeeper:<32 random characters>", cred, err)
	}
	checkZKAuth(t, "operator", pod, c, sec.GetName(), "auth")
	checkZKAuth(t, "agent", apod, ac, sec.GetName(), "auth")
	checkServiceAccounts(t, objs, dep, ds)
	checkUserRoles(t, one(t, objs, "ClusterRole", "-viewer"), one(t, objs, "ClusterRole", "-deployer"))
	// Not on the control plane by default.
	aff := apod.Affinity
	if aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil ||
		len(aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms) != 1 ||
		!slices.ContainsFunc(aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions, func(r corev1.NodeSelectorRequirement) bool {
			return r.Key == "node-role.kubernetes.io/control-plane" && r.Operator == corev1.NodeSelectorOpDoesNotExist
		}) {
		t.Errorf("agent may run on control-plane nodes by default: affinity %+v", aff)
	}
}

// checkZKAuth: the container reads the ZooKeeper credentials from key of Secret secret, mounted
// as a file (--zk-auth-file), never from an environment variable its children could inherit.
func checkZKAuth(t *testing.T, who string, pod corev1.PodSpec, c corev1.Container, secret, key string) {
	t.Helper()
	var vol *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == "zk-auth" {
			vol = &pod.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != secret || len(vol.Secret.Items) != 1 ||
		vol.Secret.Items[0].Key != key || vol.Secret.Items[0].Path != "auth" {
		t.Errorf("%s: zk-auth volume %+v, want Secret %s key %s as auth", who, vol, secret, key)
	}
	mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "zk-auth" && m.MountPath == "/etc/rollkeeper/zk-auth" && m.ReadOnly
	})
	if !mounted {
		t.Errorf("%s: zk-auth not mounted read-only at /etc/rollkeeper/zk-auth: %+v", who, c.VolumeMounts)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "ROLLKEEPER_ZK_AUTH_FILE" && e.Value == "/etc/rollkeeper/zk-auth/auth"
	}) {
		t.Errorf("%s: env lacks ROLLKEEPER_ZK_AUTH_FILE: %+v", who, c.Env)
	}
	for _, e := range c.Env {
		if e.Name == "ROLLKEEPER_ZK_AUTH" || e.Name == "ROLLKEEPER_INSECURE_ALLOW_OPEN_ZOOKEEPER" {
			t.Errorf("%s: env has %s", who, e.Name)
		}
	}
}

// zookeeper.insecureAllowOpen runs both without credentials, by name, and renders no Secret.
func TestTemplateOpenZooKeeper(t *testing.T) {
	objs := render(t, release{name: "rk", namespace: "rk-open", set: []string{"zookeeper.servers=zk:2181", "zookeeper.insecureAllowOpen=true"}})
	for _, s := range byKind(objs, "Secret") {
		if strings.HasSuffix(s.GetName(), "-zk-auth") {
			t.Errorf("credentials Secret %s rendered when running open", s.GetName())
		}
	}
	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	for who, c := range map[string]corev1.Container{"operator": dep.Spec.Template.Spec.Containers[0], "agent": ds.Spec.Template.Spec.Containers[0]} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "ROLLKEEPER_INSECURE_ALLOW_OPEN_ZOOKEEPER" && e.Value == "true"
		}) {
			t.Errorf("%s: env lacks ROLLKEEPER_INSECURE_ALLOW_OPEN_ZOOKEEPER=true: %+v", who, c.Env)
		}
		if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "zk-auth" }) {
			t.Errorf("%s mounts zk-auth when running open", who)
		}
	}
}

// checkUserRoles checks the ClusterRoles for people: the viewer aggregated into view, the
// deployer (root on the selected nodes) into nothing; the viewer only reads; nobody but the
// operator writes status or node sets.
func checkUserRoles(t *testing.T, viewer, editor *unstructured.Unstructured) {
	t.Helper()
	const agg = "rbac.authorization.k8s.io/aggregate-to-"
	if l := viewer.GetLabels(); l[agg+"view"] != "true" || l[agg+"edit"] != "" || l[agg+"admin"] != "" {
		t.Errorf("viewer role %s labels %v: want aggregated into view only", viewer.GetName(), l)
	}
	for k := range editor.GetLabels() {
		if strings.HasPrefix(k, agg) {
			t.Errorf("deployer role %s is aggregated (%s): creating a RollingDeploy is root on the nodes", editor.GetName(), k)
		}
	}
	// verbs maps "resource" (rollkeeper.io) or "core/resource" to the verbs a role grants.
	verbs := func(u *unstructured.Unstructured) map[string][]string {
		m := map[string][]string{}
		for _, r := range rulesOf(t, u) {
			prefix := ""
			switch {
			case slices.Equal(r.APIGroups, []string{"rollkeeper.io"}):
			case slices.Equal(r.APIGroups, []string{""}):
				prefix = "core/"
			default:
				t.Errorf("%s: rule outside rollkeeper.io and the core group: %+v", u.GetName(), r)
			}
			for _, res := range r.Resources {
				m[prefix+res] = append(m[prefix+res], r.Verbs...)
				slices.Sort(m[prefix+res])
			}
		}
		return m
	}
	read := []string{"get", "list", "watch"}
	wantViewer := map[string][]string{"rollingdeploys": read, "rollingdeploynodesets": read, "rollingdeploys/status": {"get"}}
	// The deployer reads Nodes' labels for kubectl rollkeeper plan -f; nothing else outside.
	wantEditor := map[string][]string{"rollingdeploys": {"create", "delete", "get", "list", "patch", "update", "watch"},
		"rollingdeploynodesets": read, "rollingdeploys/status": {"get"}, "core/nodes": {"get", "list"}}
	if got := verbs(viewer); !reflect.DeepEqual(got, wantViewer) {
		t.Errorf("viewer role grants %v, want %v", got, wantViewer)
	}
	if got := verbs(editor); !reflect.DeepEqual(got, wantEditor) {
		t.Errorf("deployer role grants %v, want %v", got, wantEditor)
	}
}

// Non-default values reach the objects.
func TestTemplateCustomValues(t *testing.T) {
	objs := render(t, customRelease)
	checkNoWildcards(t, objs)
	for _, o := range byKind(objs, "ClusterRole") {
		for k := range o.GetLabels() {
			if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
				t.Errorf("ClusterRole %s aggregated (%s) with rbac.aggregateToDefaultRoles: false", o.GetName(), k)
			}
		}
	}
	one(t, objs, "ClusterRole", "-viewer")
	one(t, objs, "ClusterRole", "-deployer")
	sm := one(t, objs, "ServiceMonitor", "-manager")
	if sm.GetLabels()["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels %v", sm.GetLabels())
	}
	svc := one(t, objs, "Service", "-manager-metrics")
	if ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports"); len(ports) != 1 || fmt.Sprint(ports[0].(map[string]any)["port"]) != "9090" {
		t.Errorf("metrics Service ports %v", ports)
	}

	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	if *dep.Spec.Replicas != 3 {
		t.Errorf("operator replicas %d, want 3", *dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != "registry.example/rollkeeper/manager:1.2.3" || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("operator image %s %s", c.Image, c.ImagePullPolicy)
	}
	for _, a := range []string{"--zk-servers=zk-0.zk:2181,zk-1.zk:2181,zk-2.zk:2181", "--zk-root=/prod/rollkeeper",
		"--zk-session-timeout=20s", "--zap-log-level=debug", "--p2p-port=7881", "--p2p-upload-rate=10485760",
		"--seeder-max-bytes=9Gi"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("operator args %v lack %s", c.Args, a)
		}
	}
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet || !hasPort(c.Ports, 9080) || !hasPort(c.Ports, 9081) ||
		!slices.Contains(c.Args, "--metrics-bind-address=:9080") || !slices.Contains(c.Args, "--health-probe-bind-address=:9081") ||
		!slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "KUBERNETES_SERVICE_HOST" && e.Value == "10.1.2.3" }) {
		t.Errorf("operator host network %v (dns %s), ports %v, args %v, env %v", pod.HostNetwork, pod.DNSPolicy, c.Ports, c.Args, c.Env)
	}
	if pod.ServiceAccountName != "rk-operator" || len(pod.ImagePullSecrets) != 1 || len(pod.Tolerations) != 1 || len(pod.NodeSelector) != 1 {
		t.Errorf("operator pod spec: sa %s pull secrets %v tolerations %v node selector %v", pod.ServiceAccountName, pod.ImagePullSecrets, pod.Tolerations, pod.NodeSelector)
	}

	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	apod := ds.Spec.Template.Spec
	ac := apod.Containers[0]
	for _, a := range []string{"--state-dir=/data/rollkeeper", "--fetcher=http", "--p2p-port=7882", "--zap-log-level=debug", "--pin-budget=0", "--zk-root=/prod/rollkeeper"} {
		if !slices.Contains(ac.Args, a) {
			t.Errorf("agent args %v lack %s", ac.Args, a)
		}
	}
	for _, a := range ac.Args {
		if strings.HasPrefix(a, "--health-addr") {
			t.Errorf("agent has %s with healthPort 0", a)
		}
	}
	if ac.ReadinessProbe != nil {
		t.Error("agent has a probe with healthPort 0")
	}
	if apod.Volumes[0].HostPath.Path != "/data/rollkeeper" || ac.VolumeMounts[0].MountPath != "/data/rollkeeper" {
		t.Errorf("agent state dir: %+v %+v", apod.Volumes, ac.VolumeMounts)
	}
	if apod.PriorityClassName != "" || apod.NodeSelector["rollkeeper.io/node"] != "true" || len(apod.Tolerations) != 1 || apod.Tolerations[0].Key != "dedicated" {
		t.Errorf("agent scheduling: priority %q selector %v tolerations %v", apod.PriorityClassName, apod.NodeSelector, apod.Tolerations)
	}
	if !slices.ContainsFunc(ac.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMAXPROCS" && e.Value == "2" }) {
		t.Errorf("agent env lacks extraEnv: %v", ac.Env)
	}
	// An existing Secret: mounted, none generated.
	checkZKAuth(t, "agent", apod, ac, "zk-digest", "credentials")
	checkZKAuth(t, "operator", dep.Spec.Template.Spec, dep.Spec.Template.Spec.Containers[0], "zk-digest", "credentials")
	if got := byKind(objs, "Secret"); len(got) != 0 {
		t.Errorf("Secrets rendered with zookeeper.auth.existingSecret and signing.existingSecret: %v", got)
	}
	// An existing signing key: mounted into the operator only; its public key, from
	// signing.trustedKeys, in the ConfigMap.
	cmName, keys := trustedKeysOf(t, objs)
	if len(keys) != 1 {
		t.Errorf("ConfigMap %s trusts %d keys, want signing.trustedKeys' one", cmName, len(keys))
	}
	checkSigningMounts(t, "chart", dep, ds, "plan-signing", cmName)
	checkServiceAccounts(t, objs, dep, ds)
}

// checkServiceAccounts: the workloads run as the rendered ServiceAccounts, which the bindings name.
func checkServiceAccounts(t *testing.T, objs []*unstructured.Unstructured, dep appsv1.Deployment, ds appsv1.DaemonSet) {
	t.Helper()
	sas := map[string]bool{}
	for _, o := range byKind(objs, "ServiceAccount") {
		sas[o.GetName()] = true
	}
	for _, sa := range []string{dep.Spec.Template.Spec.ServiceAccountName, ds.Spec.Template.Spec.ServiceAccountName} {
		if !sas[sa] {
			t.Errorf("ServiceAccount %s is not rendered (have %v)", sa, sas)
		}
	}
	bound := map[string]int{}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range byKind(objs, kind) {
			var b rbacv1.RoleBinding
			convert(t, o, &b)
			for _, s := range b.Subjects {
				if s.Kind == "ServiceAccount" {
					bound[s.Name]++
				}
			}
		}
	}
	if bound[dep.Spec.Template.Spec.ServiceAccountName] != 2 || bound[ds.Spec.Template.Spec.ServiceAccountName] != 1 {
		t.Errorf("bindings per ServiceAccount %v: want the operator in 2 (cluster + leader election), the agent in 1", bound)
	}
}

func hasEnvField(env []corev1.EnvVar, name, field string) bool {
	for _, e := range env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field {
			return true
		}
	}
	return false
}

func hasPort(ports []corev1.ContainerPort, p int32) bool {
	for _, cp := range ports {
		if cp.ContainerPort == p {
			return true
		}
	}
	return false
}

func mountsEmptyDir(pod corev1.PodSpec, c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				return true
			}
		}
	}
	return false
}

// A values file that violates values.schema.json is rejected, naming the field.
func TestSchemaRejectsInvalidValues(t *testing.T) {
	cases := []struct{ file, want string }{
		{"testdata/missing-servers.yaml", "/zookeeper/servers"},
		{"testdata/bad-servers.yaml", "/zookeeper/servers"},
		{"testdata/bad-type.yaml", "/operator/replicas': got string, want integer"},
		{"testdata/unknown-key.yaml", "additional properties 'statedir' not allowed"},
		{"testdata/bad-pull-policy.yaml", "/image/pullPolicy"},
	}
	for _, tc := range cases {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			r := release{name: "bad", namespace: "bad", valuesFiles: []string{tc.file}}
			args := append([]string{"template", r.name, "charts/rollkeeper"}, r.helmArgs(t)...)
			_, stderr, err := runHelm(t, args...)
			if err == nil {
				t.Fatalf("helm template accepted %s", tc.file)
			}
			if !strings.Contains(stderr, "values don't meet the specifications of the schema") || !strings.Contains(stderr, tc.want) {
				t.Fatalf("helm template rejected %s without naming %q:\n%s", tc.file, tc.want, stderr)
			}
			t.Logf("rejected: %s", strings.TrimSpace(stderr))
		})
	}
}

// The operator's ClusterRole in the chart is exactly controller-gen's config/rbac/role.yaml, and
// the agent may only get Nodes.
func TestChartRBACMatchesGenerated(t *testing.T) {
	want := generatedManagerRules(t)
	for _, r := range []release{defaultRelease, customRelease} {
		objs := render(t, r)
		if got := rulesOf(t, one(t, objs, "ClusterRole", "-manager")); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: operator ClusterRole rules differ from config/rbac/role.yaml (run make manifests):\n got %+v\nwant %+v", r.name, got, want)
		}
		agent := rulesOf(t, one(t, objs, "ClusterRole", "-agent"))
		wantAgent := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}}}
		if !reflect.DeepEqual(agent, wantAgent) {
			t.Errorf("%s: agent ClusterRole rules %+v, want only get on nodes", r.name, agent)
		}
	}
}

// kustomizeDefault renders config/default with kustomize as a library (what kubectl kustomize
// runs).
func kustomizeDefault(t testing.TB) []*unstructured.Unstructured {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(t), "config", "default"))
	if err != nil {
		t.Fatalf("kustomize config/default: %v", err)
	}
	b, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(b)
	if err != nil {
		t.Fatalf("kustomize output: %v", err)
	}
	return objs
}

// config/ (kustomize) installs the same kinds of objects as the chart, with the same RBAC.
func TestKustomizeInSyncWithChart(t *testing.T) {
	kobjs := kustomizeDefault(t)
	cobjs := render(t, defaultRelease)
	checkNoWildcards(t, kobjs)

	kinds := func(objs []*unstructured.Unstructured) map[string]int {
		m := map[string]int{}
		for _, o := range objs {
			// helm installs into an existing (or --create-namespace) namespace; kustomize cannot
			// generate credentials or a signing key (the user creates the Secrets and the trusted
			// keys' ConfigMap, see config/default).
			if o.GetKind() != "Namespace" && o.GetKind() != "Secret" && o.GetKind() != "ConfigMap" {
				m[o.GetKind()]++
			}
		}
		return m
	}
	if k, c := kinds(kobjs), kinds(cobjs); !reflect.DeepEqual(k, c) {
		t.Errorf("config/default renders %v, the chart %v", k, c)
	}
	if got := rulesOf(t, one(t, kobjs, "ClusterRole", "-manager-role")); !reflect.DeepEqual(got, generatedManagerRules(t)) {
		t.Errorf("config/default operator rules differ from role.yaml: %+v", got)
	}
	if k, c := rulesOf(t, one(t, kobjs, "ClusterRole", "-agent-role")), rulesOf(t, one(t, cobjs, "ClusterRole", "-agent")); !reflect.DeepEqual(k, c) {
		t.Errorf("agent rules: config %+v, chart %+v", k, c)
	}
	if k, c := rulesOf(t, one(t, kobjs, "Role", "-leader-election-role")), rulesOf(t, one(t, cobjs, "Role", "-leader-election")); !reflect.DeepEqual(k, c) {
		t.Errorf("leader election rules: config %+v, chart %+v", k, c)
	}
	checkUserRoles(t, one(t, kobjs, "ClusterRole", "-viewer-role"), one(t, kobjs, "ClusterRole", "-deployer"))

	// The workloads' security-relevant settings agree.
	var kdep, cdep appsv1.Deployment
	convert(t, one(t, kobjs, "Deployment", "-manager"), &kdep)
	convert(t, one(t, cobjs, "Deployment", "-manager"), &cdep)
	if !reflect.DeepEqual(kdep.Spec.Template.Spec.Containers[0].SecurityContext, cdep.Spec.Template.Spec.Containers[0].SecurityContext) ||
		*kdep.Spec.Replicas != *cdep.Spec.Replicas || !mountsEmptyDir(kdep.Spec.Template.Spec, kdep.Spec.Template.Spec.Containers[0], "/var/lib/rollkeeper-seeder") ||
		!hasEnvField(kdep.Spec.Template.Spec.Containers[0].Env, "POD_IP", "status.podIP") {
		t.Errorf("operator Deployment differs between config/ and the chart:\nconfig %+v\nchart  %+v", kdep.Spec, cdep.Spec)
	}
	var kds, cds appsv1.DaemonSet
	convert(t, one(t, kobjs, "DaemonSet", "-agent"), &kds)
	convert(t, one(t, cobjs, "DaemonSet", "-agent"), &cds)
	kp, cp := kds.Spec.Template.Spec, cds.Spec.Template.Spec
	// The same credentials Secret, signing key Secret and trusted keys ConfigMap under each
	// one's name.
	checkZKAuth(t, "config/ agent", kp, kp.Containers[0], "rollkeeper-zk-auth", "auth")
	checkZKAuth(t, "config/ operator", kdep.Spec.Template.Spec, kdep.Spec.Template.Spec.Containers[0], "rollkeeper-zk-auth", "auth")
	checkSigningMounts(t, "config/", kdep, kds, "rollkeeper-signing", "rollkeeper-trusted-keys")
	kp.Volumes = slices.Clone(kp.Volumes)
	for i := range kp.Volumes {
		if kp.Volumes[i].Secret != nil {
			s := *kp.Volumes[i].Secret
			s.SecretName = "rk-rollkeeper-zk-auth"
			kp.Volumes[i].Secret = &s
		}
		if kp.Volumes[i].ConfigMap != nil {
			c := *kp.Volumes[i].ConfigMap
			c.Name = "rk-rollkeeper-trusted-keys"
			kp.Volumes[i].ConfigMap = &c
		}
	}
	kdepPod, cdepPod := kdep.Spec.Template.Spec, cdep.Spec.Template.Spec
	kdepPod.Volumes = slices.Clone(kdepPod.Volumes)
	for i := range kdepPod.Volumes {
		switch v := &kdepPod.Volumes[i]; {
		case v.Secret != nil && v.Secret.SecretName == "rollkeeper-signing":
			s := *v.Secret
			s.SecretName = "rk-rollkeeper-signing"
			v.Secret = &s
		case v.ConfigMap != nil:
			c := *v.ConfigMap
			c.Name = "rk-rollkeeper-trusted-keys"
			v.ConfigMap = &c
		}
	}
	for _, name := range []string{"signing-key", "trusted-keys"} {
		find := func(p corev1.PodSpec) *corev1.Volume {
			for i := range p.Volumes {
				if p.Volumes[i].Name == name {
					return &p.Volumes[i]
				}
			}
			return nil
		}
		if k, c := find(kdepPod), find(cdepPod); !reflect.DeepEqual(k, c) {
			t.Errorf("operator volume %s: config/ %+v, chart %+v", name, k, c)
		}
	}
	if kp.HostNetwork != cp.HostNetwork || kp.HostPID != cp.HostPID || kp.PriorityClassName != cp.PriorityClassName ||
		!reflect.DeepEqual(kp.Tolerations, cp.Tolerations) || !reflect.DeepEqual(kp.Volumes, cp.Volumes) ||
		!reflect.DeepEqual(kp.Containers[0].SecurityContext, cp.Containers[0].SecurityContext) ||
		!reflect.DeepEqual(kp.Containers[0].Env[:2], cp.Containers[0].Env[:2]) {
		t.Errorf("agent DaemonSet differs between config/ and the chart:\nconfig %+v\nchart  %+v", kp, cp)
	}
}

// Shared control plane for the apply tests (the RBAC test has its own stack).
var (
	cpOnce sync.Once
	cpErr  error
	cp     *harness.ControlPlane
	cpDir  string
)

func controlPlane(t testing.TB) *harness.ControlPlane {
	t.Helper()
	cpOnce.Do(func() {
		if cpDir, cpErr = os.MkdirTemp("", "rollkeeper-chart-test-"); cpErr != nil {
			return
		}
		cp, cpErr = harness.StartControlPlane(cpDir)
	})
	if cpErr != nil {
		t.Fatal(cpErr)
	}
	return cp
}

func stopSharedControlPlane() {
	if cp != nil {
		_ = cp.Stop()
	}
	if cpDir != "" {
		_ = os.RemoveAll(cpDir)
	}
}

const fieldOwner = client.FieldOwner("rollkeeper-chart-test")

// apply server-side-applies objs (CRDs and Namespaces first) and reads each back. Objects of
// kinds in skip are left out.
func apply(t *testing.T, ctx context.Context, c client.Client, namespace string, objs []*unstructured.Unstructured, skip ...string) {
	t.Helper()
	if namespace != "" {
		ns := &corev1.Namespace{}
		ns.Name = namespace
		if err := c.Create(ctx, ns); err != nil {
			t.Fatalf("create namespace %s: %v", namespace, err)
		}
	}
	order := func(o *unstructured.Unstructured) int {
		switch o.GetKind() {
		case "CustomResourceDefinition":
			return 0
		case "Namespace":
			return 1
		}
		return 2
	}
	sorted := slices.Clone(objs)
	slices.SortStableFunc(sorted, func(a, b *unstructured.Unstructured) int { return order(a) - order(b) })
	for _, o := range sorted {
		if slices.Contains(skip, o.GetKind()) {
			t.Logf("not applied: %s %s", o.GetKind(), o.GetName())
			continue
		}
		o = o.DeepCopy()
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), fieldOwner, client.ForceOwnership); err != nil {
			t.Errorf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			continue
		}
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("read back %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// Every object the chart renders (default and custom values) and config/default are accepted
// by the API server.
func TestRenderedObjectsApply(t *testing.T) {
	c := controlPlane(t).Client
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("chart-defaults", func(t *testing.T) {
		apply(t, ctx, c, defaultRelease.namespace, render(t, defaultRelease))
	})
	t.Run("chart-custom-values", func(t *testing.T) {
		// The ServiceMonitor needs prometheus-operator's CRD, which the test API server lacks.
		apply(t, ctx, c, customRelease.namespace, render(t, customRelease), "ServiceMonitor")
	})
	t.Run("kustomize-config-default", func(t *testing.T) {
		apply(t, ctx, c, "", kustomizeDefault(t))
	})
}

// agent.backend=systemd: the agent gets the systemd flags and the host's systemd and D-Bus
// sockets (it already shares the host's PID namespace, which systemd's private socket needs).
func TestTemplateSystemdBackend(t *testing.T) {
	objs := render(t, release{name: "sd", namespace: "rk-sd", set: []string{"zookeeper.servers=zk:2181",
		"agent.backend=systemd", "agent.systemd.unit=svc-%s.service", "agent.systemd.manageUnits=true"}})
	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	for _, a := range []string{"--backend=systemd", "--systemd-unit=svc-%s.service", "--systemd-manage-units=true", "--systemd-via-bus=false"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("agent args %v lack %s", c.Args, a)
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for name, path := range map[string]string{"run-systemd": "/run/systemd", "run-dbus": "/run/dbus"} {
		if mounts[name] != path || hostPaths[name] != path {
			t.Errorf("%s: mounted at %q from host path %q, want %s", name, mounts[name], hostPaths[name], path)
		}
	}
	if !pod.HostPID {
		t.Error("agent without hostPID: systemd's private socket refuses peers of other PID namespaces")
	}
}

// zookeeper.tls.existingSecret mounts the Secret's CA and client certificate into the operator
// and the agents and points their --zk-tls-* flags (environment) at the files.
func TestTemplateZooKeeperTLS(t *testing.T) {
	objs := render(t, release{name: "rk", namespace: "rk-tls", set: []string{"zookeeper.servers=zk:2281",
		"zookeeper.tls.existingSecret=zk-tls", "zookeeper.tls.serverName=zk.example"}})
	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	for who, pod := range map[string]corev1.PodSpec{"operator": dep.Spec.Template.Spec, "agent": ds.Spec.Template.Spec} {
		c := pod.Containers[0]
		if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
			return v.Name == "zk-tls" && v.Secret != nil && v.Secret.SecretName == "zk-tls"
		}) || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == "zk-tls" && m.MountPath == "/etc/rollkeeper/zk-tls" && m.ReadOnly
		}) {
			t.Errorf("%s: zk-tls Secret not mounted: %+v %+v", who, pod.Volumes, c.VolumeMounts)
		}
		want := map[string]string{"ROLLKEEPER_ZK_TLS_CA_FILE": "/etc/rollkeeper/zk-tls/ca.crt",
			"ROLLKEEPER_ZK_TLS_CERT_FILE": "/etc/rollkeeper/zk-tls/tls.crt", "ROLLKEEPER_ZK_TLS_KEY_FILE": "/etc/rollkeeper/zk-tls/tls.key",
			"ROLLKEEPER_ZK_TLS_SERVER_NAME": "zk.example"}
		for name, value := range want {
			if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name && e.Value == value }) {
				t.Errorf("%s: env lacks %s=%s", who, name, value)
			}
		}
	}
	// Without it: no TLS environment.
	objs = render(t, defaultRelease)
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		if strings.HasPrefix(e.Name, "ROLLKEEPER_ZK_TLS_") {
			t.Errorf("operator has %s without zookeeper.tls", e.Name)
		}
	}
}
