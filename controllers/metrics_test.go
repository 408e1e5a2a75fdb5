package controllers

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// series gathers reg into "name{k=v,...}" -> value, labels sorted by name.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			out[f.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

func TestRolloutMetricsFollowStatus(t *testing.T) {
	m := newRolloutMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	st := &v1alpha1.RollingDeployStatus{Phase: v1alpha1.PhaseProgressing, Services: []v1alpha1.ServiceStatus{
		{Name: "a", Phase: v1alpha1.PhaseProgressing, MinAvailable: 3, Total: 5, Online: 4, Updated: 2, Staged: 2, Upgrading: 1},
		{Name: "b", Phase: v1alpha1.PhasePending, MinAvailable: 2, Total: 4, Online: 3, Unreachable: 1, Failed: 1},
	}}
	m.observe("web", st)
	m.observe("other", &v1alpha1.RollingDeployStatus{Phase: v1alpha1.PhaseComplete, Services: []v1alpha1.ServiceStatus{
		{Name: "c", Phase: v1alpha1.PhaseComplete, MinAvailable: 1, Total: 2, Online: 2, Updated: 2},
	}})
	got := series(t, reg)
	want := map[string]float64{
		"rollkeeper_rollout_nodes{rollingdeploy=web,service=a,state=total}":       5,
		"rollkeeper_rollout_nodes{rollingdeploy=web,service=a,state=online}":      4,
		"rollkeeper_rollout_nodes{rollingdeploy=web,service=a,state=updated}":     2,
		"rollkeeper_rollout_nodes{rollingdeploy=web,service=a,state=upgrading}":   1,
		"rollkeeper_rollout_nodes{rollingdeploy=web,service=b,state=unreachable}": 1,
		"rollkeeper_rollout_nodes{rollingdeploy=web,service=b,state=failed}":      1,
		"rollkeeper_rollout_progress_ratio{rollingdeploy=web,service=a}":          0.4,
		"rollkeeper_rollout_progress_ratio{rollingdeploy=web,service=b}":          0,
		"rollkeeper_rollout_progress_ratio{rollingdeploy=other,service=c}":        1,
		"rollkeeper_quorum_headroom{rollingdeploy=web,service=a}":                 1,
		"rollkeeper_quorum_headroom{rollingdeploy=web,service=b}":                 1,
		"rollkeeper_quorum_min_available{rollingdeploy=web,service=a}":            3,
		"rollkeeper_rollout_phase{phase=Progressing,rollingdeploy=web,service=a}": 1,
		"rollkeeper_rollout_phase{phase=Complete,rollingdeploy=web,service=a}":    0,
		"rollkeeper_rollout_phase{phase=Pending,rollingdeploy=web,service=b}":     1,
		"rollkeeper_rollingdeploy_phase{phase=Progressing,rollingdeploy=web}":     1,
		"rollkeeper_rollingdeploy_phase{phase=Complete,rollingdeploy=other}":      1,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %t), want %v", k, g, ok, v)
		}
	}
	// One phase at 1 per service.
	ones := 0
	for k, v := range got {
		if strings.HasPrefix(k, "rollkeeper_rollout_phase{") && strings.Contains(k, "service=a") && strings.Contains(k, "rollingdeploy=web") {
			ones += int(v)
		}
	}
	if ones != 1 {
		t.Errorf("service a has %d phases at 1", ones)
	}

	// b leaves the spec: its series go, a's stay.
	st.Services = st.Services[:1]
	m.observe("web", st)
	got = series(t, reg)
	for k := range got {
		if strings.Contains(k, "service=b") {
			t.Errorf("stale series of a service no longer in status: %s", k)
		}
	}
	if _, ok := got["rollkeeper_quorum_headroom{rollingdeploy=web,service=a}"]; !ok {
		t.Error("service a lost its series")
	}

	// The RollingDeploy is deleted: nothing of it is left, the other one is untouched.
	m.forget("web")
	got = series(t, reg)
	for k := range got {
		if strings.Contains(k, "rollingdeploy=web") {
			t.Errorf("stale series of a deleted RollingDeploy: %s", k)
		}
	}
	if got["rollkeeper_rollout_progress_ratio{rollingdeploy=other,service=c}"] != 1 {
		t.Errorf("forgetting web touched other: %v", got)
	}
}

// The manager's registry serves the operator's ZooKeeper session (the suite's manager is up).
func TestZKSessionMetricsInManagerRegistry(t *testing.T) {
	reg, ok := ctrlmetrics.Registry.(*prometheus.Registry)
	if !ok {
		t.Fatalf("controller-runtime registry is a %T", ctrlmetrics.Registry)
	}
	got := series(t, reg)
	if v, ok := got["rollkeeper_zookeeper_session_state{}"]; !ok || v != 1 {
		t.Errorf("rollkeeper_zookeeper_session_state = %v (present %t), want 1", v, ok)
	}
	if _, ok := got["rollkeeper_zookeeper_reconnects_total{}"]; !ok {
		t.Error("rollkeeper_zookeeper_reconnects_total missing")
	}
}

// docs/metrics.md lists every operator metric, and the Grafana dashboard queries only
// documented metrics.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{MetricRolloutNodes, MetricRolloutProgress, MetricRolloutPhase, MetricRollingDeployPhase,
		MetricQuorumMinAvailable, MetricQuorumHeadroom, MetricZKSessionState, MetricZKReconnects, MetricZKExpirations,
		MetricReconcilePanics} {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/metrics.md does not list %s", name)
		}
	}
	dash, err := os.ReadFile(filepath.Join("..", "docs", "grafana", "rollkeeper-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(dash, &v); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	for _, name := range regexp.MustCompile(`rollkeeper_[a-z0-9_]+`).FindAllString(string(dash), -1) {
		name = strings.TrimSuffix(name, "_bucket")
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("the dashboard queries %s, which docs/metrics.md does not list", name)
		}
	}
}
