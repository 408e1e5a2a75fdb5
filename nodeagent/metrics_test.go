package nodeagent_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	dto "github.com/prometheus/client_model/go"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
)

// agentSeries gathers one agent's registry into "name{k=v,...}" -> value (histograms: their
// sample count), labels sorted by name.
func agentSeries(t *testing.T, m *nodeagent.Metrics) map[string]float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := f.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(s.GetHistogram().GetSampleCount())
			case dto.MetricType_COUNTER:
				out[key] = s.GetCounter().GetValue()
			default:
				out[key] = s.GetGauge().GetValue()
			}
		}
	}
	return out
}

// startMeteredAgent starts an agent with metrics on the env's ZooKeeper and artifact server.
func (e *env) startMeteredAgent(name string) *nodeagent.Metrics {
	t := e.t
	log := logr.Discard()
	if testing.Verbose() {
		log = testr.New(t)
	}
	zk := dial(t, e.ctx, log)
	st, err := store.New(filepath.Join(t.TempDir(), name), fetch.NewHTTP())
	must(t, err)
	m := nodeagent.NewMetrics()
	a, err := nodeagent.New(nodeagent.Config{Node: name, Address: "127.0.0.1", Layout: e.layout, ZK: zk,
		Backend: backend.NewMemory(), Store: st, Logger: log, Metrics: m,
		RetryInterval: 50 * time.Millisecond, MaxRetryInterval: time.Second})
	must(t, err)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// Each agent's registry reports its own services, upgrades, health failures and session.
func TestAgentMetrics(t *testing.T) {
	const nodes = 2
	e := newEnv(t)
	e.publish("a", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	var ms []*nodeagent.Metrics
	for i := 1; i <= nodes; i++ {
		ms = append(ms, e.startMeteredAgent(fmt.Sprintf("node-%d", i)))
	}
	// eventually polls every agent's series until cond holds for each.
	eventually := func(what string, cond func(map[string]float64) bool) {
		t.Helper()
		e.waitFor(what, time.Minute, func() bool {
			for _, m := range ms {
				if !cond(agentSeries(t, m)) {
					return false
				}
			}
			return true
		})
	}
	eventually("v1 up on every agent", func(s map[string]float64) bool {
		return s["rollkeeper_agent_service_info{service=a,version=v1}"] == 1 && s["rollkeeper_agent_service_up{service=a}"] == 1
	})
	for _, m := range ms {
		s := agentSeries(t, m)
		if s["rollkeeper_agent_zookeeper_session_state{}"] != 1 {
			t.Errorf("session state %v, want 1", s["rollkeeper_agent_zookeeper_session_state{}"])
		}
		if v, ok := s["rollkeeper_agent_zookeeper_reconnects_total{}"]; !ok || v != 0 {
			t.Errorf("reconnects %v (present %t), want 0", v, ok)
		}
	}

	e.publish("a", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	eventually("every agent upgraded to v2", func(s map[string]float64) bool {
		return s["rollkeeper_agent_service_info{service=a,version=v2}"] == 1 && s["rollkeeper_agent_service_up{service=a}"] == 1 &&
			s["rollkeeper_agent_upgrades_total{result=success,service=a}"] == 1
	})
	for _, m := range ms {
		s := agentSeries(t, m)
		if _, ok := s["rollkeeper_agent_service_info{service=a,version=v1}"]; ok {
			t.Errorf("the old version's info series stayed: %v", s)
		}
		if s["rollkeeper_agent_restart_duration_seconds{service=a}"] != 1 || s["rollkeeper_agent_artifact_fetches_total{result=success,service=a}"] != 1 ||
			s["rollkeeper_agent_artifact_fetch_duration_seconds{service=a}"] != 1 {
			t.Errorf("want one restart and one fetch observed: %v", s)
		}
		if s["rollkeeper_agent_health_check_failures_total{service=a}"] != 0 {
			t.Errorf("health failures on a healthy rollout: %v", s)
		}
	}

	// v3 fails its health check: the first node to try rolls back and counts the failure.
	failing := &zklayout.HealthCheck{Exec: &zklayout.Exec{Command: []string{"/bin/false"}},
		TimeoutSeconds: 1, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	e.publish("a", "v3", "v2", 1, zklayout.FailurePolicyPause, failing)
	e.waitFor("a health check failure counted", time.Minute, func() bool {
		var failures, rollbacks float64
		for _, m := range ms {
			s := agentSeries(t, m)
			failures += s["rollkeeper_agent_health_check_failures_total{service=a}"]
			rollbacks += s["rollkeeper_agent_upgrades_total{result=rollback,service=a}"]
		}
		return failures >= 1 && rollbacks == 1
	})
	eventually("every agent back up on v2", func(s map[string]float64) bool {
		return s["rollkeeper_agent_service_info{service=a,version=v2}"] == 1 && s["rollkeeper_agent_service_up{service=a}"] == 1
	})

	// The handler serves the same registry in the text format.
	rec := httptest.NewRecorder()
	ms[0].Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), `rollkeeper_agent_service_info{service="a",version="v2"} 1`) {
		t.Errorf("/metrics lacks the service info:\n%s", body)
	}
}

// docs/metrics.md lists every agent metric.
func TestAgentMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{nodeagent.MetricServiceInfo, nodeagent.MetricServiceUp, nodeagent.MetricRestartDuration,
		nodeagent.MetricHealthFailures, nodeagent.MetricUpgrades, nodeagent.MetricFetches, nodeagent.MetricFetchDuration,
		nodeagent.MetricZKSessionState, nodeagent.MetricZKReconnects, nodeagent.MetricZKExpirations,
		nodeagent.MetricP2PDownloaded, nodeagent.MetricP2PUploaded, nodeagent.MetricP2PPeers, nodeagent.MetricStepPanics,
		nodeagent.MetricRollCalls, nodeagent.MetricRollCallAnswers, nodeagent.MetricAdmitted} {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/metrics.md does not list %s", name)
		}
	}
}
