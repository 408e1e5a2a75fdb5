package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// planManifest is web at v3: a (zones, one at a time, 2 per zone, minHealthyTime 20s, a
// nightly window) then b, which depends on it.
const planManifest = `# a comment-only document first, as generators write them
---
apiVersion: rollkeeper.io/v1alpha1
kind: RollingDeploy
metadata:
  name: web
spec:
  strategy:
    maxUnavailable: 3
  services:
  - name: b
    version: v3
    dependsOn: [a]
    artifact: {url: "https://example.com/b.tgz", sha256: "` + sha + `"}
    quorum: {minAvailable: "50%"}
    nodeSelector: {matchLabels: {role: b}}
    run: {command: [/bin/b]}
  - name: a
    version: v3
    artifact: {url: "https://example.com/a.tgz", sha256: "` + sha + `"}
    quorum: {minAvailable: 3}
    nodeSelector: {matchLabels: {role: web}}
    run: {command: [/bin/a]}
    strategy:
      minHealthyTime: 20s
      topology:
        key: topology.kubernetes.io/zone
        maxUnavailablePerDomain: 2
      maintenanceWindows:
      - {start: "02:00", end: "04:00", timeZone: UTC}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
`

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// planNow is 01:30 UTC: the window opens in 30 minutes.
var planNow = time.Date(2026, 5, 4, 1, 30, 0, 0, time.UTC)

func nodeMeta(name string, l map[string]string) *metav1.PartialObjectMetadata {
	n := &metav1.PartialObjectMetadata{}
	n.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	n.Name, n.Labels = name, l
	return n
}

// planCluster has nodes web-1..6 (zone-a: 1-3, zone-b: 4-5, web-6 without a zone) and b-1..2.
func planCluster() []client.Object {
	var objs []client.Object
	zones := map[string]string{"web-1": "zone-a", "web-2": "zone-a", "web-3": "zone-a", "web-4": "zone-b", "web-5": "zone-b"}
	for _, n := range []string{"web-1", "web-2", "web-3", "web-4", "web-5", "web-6"} {
		l := map[string]string{"role": "web"}
		if z := zones[n]; z != "" {
			l[v1alpha1.LabelZone] = z
		}
		objs = append(objs, nodeMeta(n, l))
	}
	return append(objs, nodeMeta("b-1", map[string]string{"role": "b"}), nodeMeta("b-2", map[string]string{"role": "b"}),
		nodeMeta("other", nil))
}

func mustLoad(t *testing.T, manifest string) *v1alpha1.RollingDeploy {
	t.Helper()
	rd, err := loadManifest("-", strings.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

// With the live web at v2 (a's last rollout registered a node every 12 s or so), web-2 already
// on v3, web-5 unreachable and b-2 not mirrored yet.
func TestPlanFromTheLiveDeploy(t *testing.T) {
	live := mustLoad(t, planManifest)
	live.UID, live.Spec.Services[0].Version, live.Spec.Services[1].Version = "uid-web", "v2", "v2"
	live.Status = v1alpha1.RollingDeployStatus{Phase: v1alpha1.PhaseComplete, Progress: "8/8", Services: []v1alpha1.ServiceStatus{
		{Name: "a", TargetVersion: "v2", Phase: v1alpha1.PhaseComplete}, {Name: "b", TargetVersion: "v2", Phase: v1alpha1.PhaseComplete}}}
	at := func(s int) *metav1.Time {
		return &metav1.Time{Time: planNow.Add(-time.Hour + time.Duration(s)*time.Second)}
	}
	a := []v1alpha1.NodeEntry{
		{Name: "web-1", Version: "v2", Online: true, State: v1alpha1.NodeUpdated, Since: at(0)},
		{Name: "web-2", Version: "v3", Online: true, State: v1alpha1.NodeRunning, Since: at(500)},
		{Name: "web-3", Version: "v2", Online: true, State: v1alpha1.NodeUpdated, Since: at(12)},
		{Name: "web-4", Version: "v2", Online: true, State: v1alpha1.NodeUpdated, Since: at(25)},
		{Name: "web-5", State: v1alpha1.NodeUnreachable},
		{Name: "web-6", Version: "v2", Online: true, State: v1alpha1.NodeUpdated, Since: at(36)},
	}
	b := []v1alpha1.NodeEntry{{Name: "b-1", Version: "v2", Online: true, State: v1alpha1.NodeUpdated, Since: at(100)}}
	objs := append(planCluster(), live)
	objs = append(objs, shardObjects(live, "a", a)...)
	objs = append(objs, shardObjects(live, "b", b)...)
	out, err := planOf(t, planManifest, planNow, objs...)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	want := `RollingDeploy web (dry run: nothing is changed)
  live RollingDeploy web: Complete, 8/8 nodes updated; node states from its mirror
order: a -> b

SERVICE a  target v3  6 node(s) selected, 5 online, 1 not online (web-5)  minAvailable 3
  nodeSelector: role=web
  gates: maxUnavailable 3; by topology.kubernetes.io/zone, 2 node(s) per domain, one domain at a time in name order; minHealthyTime 20s; window daily 02:00-04:00 UTC
  window: closed now: starts when the window opens at 02:00 UTC (in 30m)
  wave 1 (nodes without topology.kubernetes.io/zone): web-6
  wave 2 (zone-a): web-1, web-3
  wave 3 (zone-b): web-4
  skipped, already on v3: web-2
  estimate: 3 wave(s) x ~12s = ~36s (per wave: median gap between consecutive nodes' registrations of v2 (the last rollout's target) over 3 gap(s): one node's stop, start, health check and that rollout's minHealthyTime; rough)
  (nodes not online are in no wave: each upgrades once it is back and its turn comes)
  NODE   DOMAIN      VERSION  STATE        WAVE
  web-1  zone-a      v2       Updated      2
  web-2  zone-a      v3       Running      - (on v3)
  web-3  zone-a      v2       Updated      2
  web-4  zone-b      v2       Updated      3
  web-5  zone-b      -        Unreachable  - (down)
  web-6  (no label)  v2       Updated      1

SERVICE b  target v3  2 node(s) selected, 1 online, 1 state unknown  minAvailable 1 (50% of 2)
  nodeSelector: role=b
  state unknown (not mirrored): 1 node(s), counted online and not on v3
  gates: maxUnavailable 3
  wave 1: b-1
  wave 2: b-2
  estimate: 2 wave(s) x ~10s = ~20s (per wave: no previous rollout to estimate from (fewer than two nodes registered v2 at distinct times): assumed 10s per wave plus minHealthyTime 0s)
  NODE  VERSION  STATE    WAVE
  b-1   v2       Updated  1
  b-2   ?        unknown  2

total estimate: ~56s (services go one after another: the deploy queue; downloads before the first wave not counted; plus the wait for the maintenance window of a)
`
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}

// Without a RollingDeploy of the name: every state unknown, the default estimate.
func TestPlanWithoutALiveDeploy(t *testing.T) {
	out, err := planOf(t, planManifest, planNow.Add(time.Hour), planCluster()...) // 02:30: the window is open
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	wantLines(t, out,
		"no RollingDeploy web in the cluster yet: node states unknown",
		"SERVICE a  target v3  6 node(s) selected, 0 online, 6 state unknown  minAvailable 3",
		"window: a maintenance window is open now",
		"wave 1 (nodes without topology.kubernetes.io/zone): web-6\n  wave 2 (zone-a): web-1, web-2\n  wave 3 (zone-a): web-3\n  wave 4 (zone-b): web-4, web-5\n",
		"estimate: 4 wave(s) x ~30s = ~2m (per wave: no previous rollout to estimate from (no RollingDeploy of this name yet): assumed 10s per wave plus minHealthyTime 20s)",
		"total estimate: ~2m20s (")
	if strings.Contains(out, "maintenance window of a") {
		t.Errorf("an open window is counted as a wait:\n%s", out)
	}
}

// A domain whose own quorum leaves no room stops the rollout there; no room at all says so.
func TestPlanBlockedAndNoRoom(t *testing.T) {
	m := strings.Replace(planManifest, "maxUnavailablePerDomain: 2", "maxUnavailablePerDomain: 2\n        minAvailablePerDomain: 1", 1)
	m = strings.Replace(m, `{minAvailable: "50%"}`, `{minAvailable: 2}`, 1)
	out, err := planOf(t, m, planNow, planCluster()...)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	wantLines(t, out,
		"minAvailablePerDomain nodes without topology.kubernetes.io/zone: 1, zone-a: 1, zone-b: 1",
		"blocked: domain nodes without topology.kubernetes.io/zone: 1 node(s) online, minAvailablePerDomain 1: none of its 1 node(s) to upgrade can go (web-6)",
		"held: 5 node(s) of later domains wait behind it, domains go in name order (web-1, web-2, web-3, web-4, web-5)",
		"web-1  zone-a",
		"- (held)",
		"no wave: minAvailable 2 leaves no room with 2 online",
		"b-1   ?        unknown  - (no room)",
		"total estimate: none: the rollout would stop at service a (domain nodes without topology.kubernetes.io/zone is blocked by its quorum)")
}

// A quorum larger than the nodes selected: the operator would refuse it; exit 2 after the plan.
func TestPlanRefused(t *testing.T) {
	m := strings.Replace(planManifest, "quorum: {minAvailable: 3}", "quorum: {minAvailable: 9}", 1)
	out, err := planOf(t, m, planNow, planCluster()...)
	if err == nil || !strings.Contains(err.Error(), "the operator would refuse rollingdeploy web") ||
		!strings.Contains(err.Error(), "larger than the 6 node(s)") {
		t.Fatalf("err %v", err)
	}
	wantLines(t, out, "PROBLEM: quorum.minAvailable 9 is larger", "- (refused)", "total estimate: none: the operator would refuse")
}

func TestLoadManifest(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rd.yaml")
	if err := os.WriteFile(file, []byte(planManifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if rd, err := loadManifest(file, nil); err != nil || rd.Name != "web" || len(rd.Spec.Services) != 2 {
		t.Fatalf("from a file: %+v, %v", rd, err)
	}
	second := "\n---\n" + strings.Replace(planManifest, "name: web", "name: api", 1)
	for _, tc := range []struct{ name, manifest, want string }{
		{"invalid spec", strings.Replace(planManifest, "dependsOn: [a]", "dependsOn: [zz]", 1),
			`rollingdeploy web: invalid spec: service "b" depends on "zz", which is not a service of this RollingDeploy`},
		{"misspelt field", strings.Replace(planManifest, "maxUnavailable: 3", "maxUnavaliable: 3", 1), `unknown field "maxUnavaliable"`},
		{"no name", strings.Replace(planManifest, "name: web", "labels: {}", 1), "has no metadata.name"},
		{"other apiVersion", strings.Replace(planManifest, "rollkeeper.io/v1alpha1", "rollkeeper.io/v9", 1), `apiVersion "rollkeeper.io/v9"`},
		{"nothing", "apiVersion: v1\nkind: ConfigMap\n", "holds no RollingDeploy"},
		{"two", planManifest + second, "holds 2 RollingDeploys (web, api): plan one at a time"},
		{"not YAML", "kind: [", "document 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadManifest("-", strings.NewReader(tc.manifest))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to say %q", err, tc.want)
			}
		})
	}
	if _, err := loadManifest(filepath.Join(dir, "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "read manifest") {
		t.Fatalf("missing file: %v", err)
	}
}

// run checks the manifest before it loads a kubeconfig, and wants -f.
func TestRunPlanChecksFirst(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	old := stdin
	t.Cleanup(func() { stdin = old })
	stdin = strings.NewReader(strings.Replace(planManifest, "quorum: {minAvailable: 3}", `quorum: {minAvailable: "x"}`, 1))
	var errOut bytes.Buffer
	if code := run(context.Background(), []string{"plan", "-f", "-"}, &bytes.Buffer{}, &errOut); code != exitError ||
		!strings.Contains(errOut.String(), "error: rollingdeploy web: invalid spec") || strings.Contains(errOut.String(), "kubeconfig") {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, args := range [][]string{{"plan"}, {"plan", "web", "-f", "-"}} {
		errOut.Reset()
		if code := run(context.Background(), args, &bytes.Buffer{}, &errOut); code != exitError || !strings.Contains(errOut.String(), "Commands:") {
			t.Errorf("run %v: exit %d: %s", args, code, errOut.String())
		}
	}
	if o, err := parse("plan", []string{"--filename=rd.yaml"}, &bytes.Buffer{}); err != nil || o.file != "rd.yaml" {
		t.Errorf("--filename: %+v, %v", o, err)
	}
}

// planOf runs kubectl rollkeeper plan of manifest against objs at now; it returns the output
// and planDeploy's error.
func planOf(t *testing.T, manifest string, now time.Time, objs ...client.Object) (string, error) {
	t.Helper()
	p, out, _ := fakePlugin(t, objs...)
	p.now = func() time.Time { return now }
	err := p.planDeploy(context.Background(), mustLoad(t, manifest))
	return out.String(), err
}

// wantLines reports each of want that out lacks.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, s := range want {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}
