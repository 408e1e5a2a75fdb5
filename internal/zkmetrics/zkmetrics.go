// Package zkmetrics exports a ZooKeeper client's session state as Prometheus metrics, read at
// scrape time; the operator and the agent each register one under their own names.
package zkmetrics

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
)

// Names are the metric names a Collector exports.
type Names struct {
	SessionState, Reconnects, Expirations string
}

// Collector exports the session state of one client. Nothing is exported until SetClient.
type Collector struct {
	client                         atomic.Pointer[zkclient.Client]
	state, reconnects, expirations *prometheus.Desc
}

// New returns a collector exporting under names; who ("operator", "agent") goes in the help.
func New(names Names, who string) *Collector {
	return &Collector{
		state: prometheus.NewDesc(names.SessionState,
			fmt.Sprintf("1 while the %s holds a ZooKeeper session, 0 while it is disconnected or its session expired.", who), nil, nil),
		reconnects: prometheus.NewDesc(names.Reconnects,
			fmt.Sprintf("ZooKeeper sessions the %s re-established after a lost connection or an expired session.", who), nil, nil),
		expirations: prometheus.NewDesc(names.Expirations,
			fmt.Sprintf("ZooKeeper sessions of the %s that expired (its ephemeral znodes were dropped and made again).", who), nil, nil),
	}
}

// SetClient makes zk the client whose session is exported.
func (c *Collector) SetClient(zk *zkclient.Client) { c.client.Store(zk) }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.reconnects
	ch <- c.expirations
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	zk := c.client.Load()
	if zk == nil {
		return
	}
	st := zk.SessionStats()
	connected := 0.0
	if st.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(st.Reconnects))
	ch <- prometheus.MustNewConstMetric(c.expirations, prometheus.CounterValue, float64(st.Expirations))
}
