package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkmetrics"
)

// Metric names and labels of the operator (docs/metrics.md lists them for users).
const (
	MetricRolloutNodes       = "rollkeeper_rollout_nodes"
	MetricRolloutProgress    = "rollkeeper_rollout_progress_ratio"
	MetricRolloutPhase       = "rollkeeper_rollout_phase"
	MetricRollingDeployPhase = "rollkeeper_rollingdeploy_phase"
	MetricQuorumMinAvailable = "rollkeeper_quorum_min_available"
	MetricQuorumHeadroom     = "rollkeeper_quorum_headroom"
	MetricZKSessionState     = "rollkeeper_zookeeper_session_state"
	MetricZKReconnects       = "rollkeeper_zookeeper_reconnects_total"
	MetricZKExpirations      = "rollkeeper_zookeeper_session_expirations_total"
	MetricReconcilePanics    = "rollkeeper_reconcile_panics_total"
	MetricGateWaiting        = "rollkeeper_rollout_gate_waiting"

	LabelRollingDeploy = "rollingdeploy"
	LabelService       = "service"
	LabelState         = "state"
	LabelPhase         = "phase"
	LabelGate          = "gate"
)

// Node states of rollkeeper_rollout_nodes, from the service's status counts.
var nodeStates = []string{"total", "online", "updated", "staged", "upgrading", "failed", "unreachable", "downloading"}

// phases are the values of the phase label: every one is exported, 1 for the current phase.
var phases = []v1alpha1.Phase{v1alpha1.PhasePending, v1alpha1.PhaseProgressing, v1alpha1.PhasePaused,
	v1alpha1.PhaseComplete, v1alpha1.PhaseFailed, v1alpha1.PhaseInvalid, v1alpha1.PhaseWaiting}

// rolloutMetrics are the per-RollingDeploy gauges. They are set from the status the controller
// computes, so they never disagree with kubectl get rd, and a RollingDeploy's series go with it.
type rolloutMetrics struct {
	nodes, progress, phase, deployPhase, minAvailable, headroom, gate *prometheus.GaugeVec

	mu sync.Mutex
	// services holds the services exported per RollingDeploy, to delete those that left.
	services map[string]map[string]bool
}

func newRolloutMetrics() *rolloutMetrics {
	svcLabels := []string{LabelRollingDeploy, LabelService}
	return &rolloutMetrics{
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricRolloutNodes,
			Help: "Nodes of a service's rollout per state (total, online, updated, staged, upgrading, failed, unreachable, downloading), as in the RollingDeploy's status."},
			[]string{LabelRollingDeploy, LabelService, LabelState}),
		progress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricRolloutProgress,
			Help: "Updated nodes divided by the service's selected nodes (1: every node runs the target version; 0 with no node)."}, svcLabels),
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricRolloutPhase,
			Help: "Phase of a service's rollout: 1 for the current phase, 0 for the others."},
			[]string{LabelRollingDeploy, LabelService, LabelPhase}),
		deployPhase: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricRollingDeployPhase,
			Help: "Phase of a RollingDeploy: 1 for the current phase, 0 for the others."},
			[]string{LabelRollingDeploy, LabelPhase}),
		minAvailable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricQuorumMinAvailable,
			Help: "A service's quorum resolved to a node count."}, svcLabels),
		headroom: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricQuorumHeadroom,
			Help: "Online nodes minus minAvailable: how many more nodes may go down (0: upgrades wait; negative: quorum lost)."}, svcLabels),
		gate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricGateWaiting,
			Help: "1 for the gate beyond the quorum (window, canary, maxUnavailable, domain, domainQuorum, preStopCheck, alert) that holds a service's next upgrade, 0 for the others."},
			[]string{LabelRollingDeploy, LabelService, LabelGate}),
		services: map[string]map[string]bool{},
	}
}

func (m *rolloutMetrics) vecs() []*prometheus.GaugeVec {
	return []*prometheus.GaugeVec{m.nodes, m.progress, m.phase, m.deployPhase, m.minAvailable, m.headroom, m.gate}
}

// Describe and Collect make the gauges one collector: a scrape never sees half of an update
// (online changed, headroom not yet).
func (m *rolloutMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range m.vecs() {
		g.Describe(ch)
	}
}

func (m *rolloutMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.vecs() {
		g.Collect(ch)
	}
}

// observe exports a RollingDeploy's status. Services no longer in status lose their series.
func (m *rolloutMetrics) observe(rd string, st *v1alpha1.RollingDeployStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st.Phase != "" {
		setPhase(m.deployPhase, st.Phase, rd)
	}
	seen := make(map[string]bool, len(st.Services))
	for i := range st.Services {
		s := &st.Services[i]
		seen[s.Name] = true
		counts := []int32{s.Total, s.Online, s.Updated, s.Staged, s.Upgrading, s.Failed, s.Unreachable, s.Downloading}
		for j, state := range nodeStates {
			m.nodes.WithLabelValues(rd, s.Name, state).Set(float64(counts[j]))
		}
		ratio := 0.0
		if s.Total > 0 {
			ratio = float64(s.Updated) / float64(s.Total)
		}
		m.progress.WithLabelValues(rd, s.Name).Set(ratio)
		setPhase(m.phase, s.Phase, rd, s.Name)
		m.minAvailable.WithLabelValues(rd, s.Name).Set(float64(s.MinAvailable))
		m.headroom.WithLabelValues(rd, s.Name).Set(float64(s.Online - s.MinAvailable))
		for _, g := range rollout.GateNames {
			v := 0.0
			if g == s.Gate {
				v = 1
			}
			m.gate.WithLabelValues(rd, s.Name, g).Set(v)
		}
	}
	for svc := range m.services[rd] {
		if !seen[svc] {
			m.deleteService(rd, svc)
		}
	}
	m.services[rd] = seen
}

// setPhase sets the phase gauge of labels to 1 for cur and 0 for every other phase.
func setPhase(g *prometheus.GaugeVec, cur v1alpha1.Phase, labels ...string) {
	for _, p := range phases {
		v := 0.0
		if p == cur {
			v = 1
		}
		g.WithLabelValues(append(labels, string(p))...).Set(v)
	}
}

func (m *rolloutMetrics) deleteService(rd, svc string) {
	l := prometheus.Labels{LabelRollingDeploy: rd, LabelService: svc}
	for _, g := range []*prometheus.GaugeVec{m.nodes, m.progress, m.phase, m.minAvailable, m.headroom, m.gate} {
		g.DeletePartialMatch(l)
	}
}

// forget deletes every series of a RollingDeploy that is gone.
func (m *rolloutMetrics) forget(rd string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := prometheus.Labels{LabelRollingDeploy: rd}
	for _, g := range m.vecs() {
		g.DeletePartialMatch(l)
	}
	reconcilePanics.DeletePartialMatch(l)
	delete(m.services, rd)
}

// The operator's metrics live in controller-runtime's registry, served by the manager's
// metrics endpoint (--metrics-bind-address) next to controller-runtime's own.
var (
	deployMetrics = newRolloutMetrics()
	zkMetrics     = zkmetrics.New(zkmetrics.Names{SessionState: MetricZKSessionState, Reconnects: MetricZKReconnects, Expirations: MetricZKExpirations}, "operator")
	metricsOnce   sync.Once
	// reconcilePanics counts the passes that panicked (recoverPanic), by where they were.
	reconcilePanics = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricReconcilePanics,
		Help: "Reconcile passes that panicked and were recovered, by RollingDeploy, service (empty: none) and phase."},
		[]string{LabelRollingDeploy, LabelService, LabelPhase})
)

func registerMetrics() {
	metricsOnce.Do(func() {
		ctrlmetrics.Registry.MustRegister(deployMetrics, zkMetrics, reconcilePanics)
	})
}
