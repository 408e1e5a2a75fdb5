package nodeagent

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zkmetrics"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
)

// Metric names and labels of the agent (docs/metrics.md lists them for users).
const (
	MetricServiceInfo     = "rollkeeper_agent_service_info"
	MetricServiceUp       = "rollkeeper_agent_service_up"
	MetricRestartDuration = "rollkeeper_agent_restart_duration_seconds"
	MetricHealthFailures  = "rollkeeper_agent_health_check_failures_total"
	MetricUpgrades        = "rollkeeper_agent_upgrades_total"
	MetricFetches         = "rollkeeper_agent_artifact_fetches_total"
	MetricFetchDuration   = "rollkeeper_agent_artifact_fetch_duration_seconds"
	MetricZKSessionState  = "rollkeeper_agent_zookeeper_session_state"
	MetricZKReconnects    = "rollkeeper_agent_zookeeper_reconnects_total"
	MetricZKExpirations   = "rollkeeper_agent_zookeeper_session_expirations_total"
	MetricP2PDownloaded   = "rollkeeper_agent_p2p_downloaded_bytes_total"
	MetricP2PUploaded     = "rollkeeper_agent_p2p_uploaded_bytes_total"
	MetricP2PPeers        = "rollkeeper_agent_p2p_peers"
	MetricStepPanics      = "rollkeeper_agent_step_panics_total"
	MetricRollCalls       = "rollkeeper_agent_roll_calls_total"
	MetricRollCallAnswers = "rollkeeper_agent_roll_call_answers_total"
	MetricAdmitted        = "rollkeeper_agent_admitted_total"
	MetricGateWaiting     = "rollkeeper_agent_gate_waiting"

	LabelService = "service"
	LabelVersion = "version"
	LabelResult  = "result"
	LabelSource  = "source"
	LabelGate    = "gate"

	// Values of the source label: other nodes (and the operator's seeder), or the origin URL
	// (the web seed).
	SourcePeers  = "peers"
	SourceOrigin = "origin"

	// Values of the result label.
	ResultSuccess  = "success"
	ResultRollback = "rollback"
	ResultError    = "error"
	// ResultTooFew: a roll call that too few online nodes answered in time (the node did not stop).
	ResultTooFew = "too_few_answers"
)

// Metrics is one agent's Prometheus metrics, on a registry of its own so that agents sharing a
// process (scale tests) keep theirs apart. A nil *Metrics records nothing.
type Metrics struct {
	reg *prometheus.Registry

	info           *prometheus.GaugeVec
	up             *prometheus.GaugeVec
	restart        *prometheus.HistogramVec
	healthFailures *prometheus.CounterVec
	upgrades       *prometheus.CounterVec
	fetches        *prometheus.CounterVec
	fetchDuration  *prometheus.HistogramVec
	stepPanics     *prometheus.CounterVec
	rollCalls      *prometheus.CounterVec
	rollAnswers    *prometheus.CounterVec
	admitted       *prometheus.CounterVec
	gateWaiting    *prometheus.GaugeVec
	zk             *zkmetrics.Collector
	p2p            *swarmCollector

	mu sync.Mutex
	// versions is the version each service's info series carries.
	versions map[string]string
}

// NewMetrics returns an agent's metrics on a new registry. Add process-wide collectors (Go
// runtime, process) to Registry in main, where there is one agent per process.
func NewMetrics() *Metrics {
	svc := []string{LabelService}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricServiceInfo,
			Help: "1 for the version of each host service this node runs (or last ran)."}, []string{LabelService, LabelVersion}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricServiceUp,
			Help: "1 while the host service runs and passed its health check, 0 while it is stopped, upgrading or starting."}, svc),
		restart: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricRestartDuration,
			Help:    "Upgrade downtime: from stopping the old version to the new version passing its health check.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300}}, svc),
		healthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricHealthFailures,
			Help: "Starts of a version that failed their health check (failureThreshold probes in a row, or the process exited)."}, svc),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricUpgrades,
			Help: "Upgrades this node carried out, by result: success, rollback (the new version was unhealthy), error (stop or switch failed; retried)."},
			[]string{LabelService, LabelResult}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricFetches,
			Help: "Artifact downloads (fetch, verify, unpack), by result: success or error."}, []string{LabelService, LabelResult}),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricFetchDuration,
			Help:    "Time to fetch, verify and unpack an artifact that succeeded.",
			Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, svc),
		stepPanics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricStepPanics,
			Help: "Rollout steps that panicked (an agent bug): recovered, recorded as an AgentError failure and retried after a backoff."}, svc),
		rollCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRollCalls,
			Help: "Roll calls this node started before stopping its service, by result: success (enough online nodes answered) or too_few_answers (it did not stop)."},
			[]string{LabelService, LabelResult}),
		rollAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRollCallAnswers,
			Help: "Roll call rounds this node answered (its service running): one per decision another node took."}, svc),
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricAdmitted,
			Help: "Other nodes this node's decisions took down with it (a batch: the nodes queued behind it that the quorum allowed)."}, svc),
		gateWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricGateWaiting,
			Help: "1 while this node, first in its service's staging queue, waits on a gate beyond the quorum: window, canary, maxUnavailable, domain, domainQuorum, preStopCheck or alert."},
			[]string{LabelService, LabelGate}),
		zk:       zkmetrics.New(zkmetrics.Names{SessionState: MetricZKSessionState, Reconnects: MetricZKReconnects, Expirations: MetricZKExpirations}, "agent"),
		p2p:      &swarmCollector{},
		versions: map[string]string{},
	}
	m.reg.MustRegister(m.info, m.up, m.restart, m.healthFailures, m.upgrades, m.fetches, m.fetchDuration, m.stepPanics, m.rollCalls, m.rollAnswers, m.admitted, m.gateWaiting, m.zk, m.p2p)
	return m
}

// WatchP2P exports the transfer counters of src's torrents: what this node downloaded from
// peers and from the origin, and what it uploaded to peers (every machine helping).
func (m *Metrics) WatchP2P(src *fetch.P2P) {
	if m != nil {
		m.p2p.set(src)
	}
}

// swarmCollector reads the torrents' counters at scrape time. A version's series go when its
// torrent does (the store pruned the version).
type swarmCollector struct {
	mu  sync.Mutex
	src *fetch.P2P
}

var (
	p2pDownloadedDesc = prometheus.NewDesc(MetricP2PDownloaded,
		"Artifact bytes received over BitTorrent, by version and source: peers (other nodes, the operator's seeder) or origin (the artifact URL as web seed). Includes duplicate pieces.",
		[]string{LabelService, LabelVersion, LabelSource}, nil)
	p2pUploadedDesc = prometheus.NewDesc(MetricP2PUploaded,
		"Artifact bytes this node served to peers, by version.", []string{LabelService, LabelVersion}, nil)
	p2pPeersDesc = prometheus.NewDesc(MetricP2PPeers,
		"Peers connected in the version's swarm.", []string{LabelService, LabelVersion}, nil)
)

func (c *swarmCollector) set(src *fetch.P2P) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.src = src
}

func (c *swarmCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- p2pDownloadedDesc
	ch <- p2pUploadedDesc
	ch <- p2pPeersDesc
}

func (c *swarmCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src := c.src
	c.mu.Unlock()
	if src == nil {
		return
	}
	for _, s := range src.SwarmStats() {
		ch <- prometheus.MustNewConstMetric(p2pDownloadedDesc, prometheus.CounterValue,
			float64(max(0, s.BytesReadData-s.BytesWebSeedData)), s.Service, s.Version, SourcePeers)
		ch <- prometheus.MustNewConstMetric(p2pDownloadedDesc, prometheus.CounterValue,
			float64(s.BytesWebSeedData), s.Service, s.Version, SourceOrigin)
		ch <- prometheus.MustNewConstMetric(p2pUploadedDesc, prometheus.CounterValue,
			float64(s.BytesWrittenData), s.Service, s.Version)
		ch <- prometheus.MustNewConstMetric(p2pPeersDesc, prometheus.GaugeValue, float64(s.Peers), s.Service, s.Version)
	}
}

// Registry is where the agent's metrics live.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// watchZooKeeper exports zk's session state (the agent's client).
func (m *Metrics) watchZooKeeper(zk *zkclient.Client) {
	if m != nil {
		m.zk.SetClient(zk)
	}
}

// online records that svc runs version and passed its health check.
func (m *Metrics) online(svc, version string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.versions[svc]; ok && old != version {
		m.info.DeleteLabelValues(svc, old)
	}
	m.versions[svc] = version
	m.info.WithLabelValues(svc, version).Set(1)
	m.up.WithLabelValues(svc).Set(1)
}

// down records that svc is not running (stopped for an upgrade, exited, not yet started). A
// service this node never ran gets no series.
func (m *Metrics) down(svc string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.versions[svc]; ok {
		m.up.WithLabelValues(svc).Set(0)
	}
}

// upgraded records an upgrade's result; downtime is observed for successful ones.
func (m *Metrics) upgraded(svc, result string, downtime time.Duration) {
	if m == nil {
		return
	}
	m.upgrades.WithLabelValues(svc, result).Inc()
	if result == ResultSuccess {
		m.restart.WithLabelValues(svc).Observe(downtime.Seconds())
	}
}

func (m *Metrics) healthCheckFailed(svc string) {
	if m != nil {
		m.healthFailures.WithLabelValues(svc).Inc()
	}
}

// fetched records an artifact download that took d.
func (m *Metrics) fetched(svc string, err error, d time.Duration) {
	if m == nil {
		return
	}
	if err != nil {
		m.fetches.WithLabelValues(svc, ResultError).Inc()
		return
	}
	m.fetches.WithLabelValues(svc, ResultSuccess).Inc()
	m.fetchDuration.WithLabelValues(svc).Observe(d.Seconds())
}

// stepPanicked records a rollout step of svc that panicked and was recovered.
func (m *Metrics) stepPanicked(svc string) {
	if m != nil {
		m.stepPanics.WithLabelValues(svc).Inc()
	}
}

func (m *Metrics) rollCalled(svc, result string) {
	if m != nil {
		m.rollCalls.WithLabelValues(svc, result).Inc()
	}
}

func (m *Metrics) admittedOthers(svc string, n int) {
	if m != nil && n > 0 {
		m.admitted.WithLabelValues(svc).Add(float64(n))
	}
}

func (m *Metrics) rollCallAnswered(svc string) {
	if m != nil {
		m.rollAnswers.WithLabelValues(svc).Inc()
	}
}

// gate records which gate (if any: "") the service's worker waits on now.
func (m *Metrics) gate(svc, gate string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range rollout.GateNames {
		if g == gate {
			m.gateWaiting.WithLabelValues(svc, g).Set(1)
		} else {
			m.gateWaiting.DeleteLabelValues(svc, g)
		}
	}
}
