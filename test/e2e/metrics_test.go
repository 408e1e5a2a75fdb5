package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// rolloutCheck is what a user checks on the operator's metrics for service a of
// RollingDeploy rd: the node counts agree with each other and with the quorum.
func rolloutCheck(s harness.Samples, rd, svc string) string {
	l := []string{"rollingdeploy=" + rd, "service=" + svc}
	node := func(state string) float64 {
		v, _ := s.Get("rollkeeper_rollout_nodes", append(l, "state="+state)...)
		return v
	}
	headroom, ok1 := s.Get("rollkeeper_quorum_headroom", l...)
	minAvail, ok2 := s.Get("rollkeeper_quorum_min_available", l...)
	progress, ok3 := s.Get("rollkeeper_rollout_progress_ratio", l...)
	if !ok1 || !ok2 || !ok3 {
		return "no rollout series for " + rd + "/" + svc
	}
	if headroom != node("online")-minAvail {
		return fmt.Sprintf("headroom %v != online %v - minAvailable %v", headroom, node("online"), minAvail)
	}
	if total := node("total"); total == 0 || progress != node("updated")/total {
		return fmt.Sprintf("progress %v != updated %v / total %v", progress, node("updated"), total)
	}
	return ""
}

// The operator's and every agent's /metrics serve the rollout as it happens: progress and
// quorum headroom with a node down and after the rollout, each node's version, restart time and
// ZooKeeper session (through a ZooKeeper restart), the health check failure of an unhealthy
// version, and nothing left of a deleted RollingDeploy.
func TestMetricsFollowRollout(t *testing.T) {
	ports, err := zkserver.FreePorts(1)
	must(t, err)
	// The operator serves its metrics as in a cluster: HTTPS, to a ServiceAccount bound to the
	// metrics-reader ClusterRole that config/rbac ships.
	opHostPort := fmt.Sprintf("127.0.0.1:%d", ports[0])
	opAddr := "https://" + opHostPort
	s, ctx := start(t, harness.Config{AgentMetrics: true, RecordServices: []string{"a"},
		ManagerArgs: []string{"--metrics-bind-address=" + opHostPort}})
	opToken, err := harness.MetricsReaderToken(ctx, s.Client)
	must(t, err)
	const rd, minAvailable = "metrics", 3
	deployV1(t, s, ctx, rd, service(t, s, "a", "v1", harness.MinAvailable(minAvailable)))

	_, err = harness.WaitScrapeAs(ctx, opAddr, opToken, time.Minute, "operator metrics of v1 complete", func(m harness.Samples) string {
		if msg := rolloutCheck(m, rd, "a"); msg != "" {
			return msg
		}
		if v, _ := m.Get("rollkeeper_rollout_progress_ratio", "rollingdeploy="+rd, "service=a"); v != 1 {
			return fmt.Sprintf("progress %v", v)
		}
		if v, _ := m.Get("rollkeeper_zookeeper_session_state"); v != 1 {
			return fmt.Sprintf("operator zookeeper_session_state %v", v)
		}
		return ""
	})
	must(t, err)

	// Scrape the operator throughout the v2 rollout: every scrape must be consistent.
	sctx, stop := context.WithCancel(ctx)
	var (
		mu           sync.Mutex
		scrapes      int
		inconsistent []string
	)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = harness.WaitFor(sctx, rolloutTime, "end of the rollout", func(ctx context.Context) (bool, error) {
			m, err := harness.ScrapeAs(ctx, opAddr, opToken)
			if err != nil {
				return false, nil
			}
			mu.Lock()
			defer mu.Unlock()
			scrapes++
			if msg := rolloutCheck(m, rd, "a"); msg != "" {
				inconsistent = append(inconsistent, msg)
			}
			return false, nil // until stopped
		})
	}()

	// node-5 is down during the rollout: the others upgrade and the metrics show 4 of 5 updated
	// with one node unreachable, until node-5 comes back on v2.
	down := s.Node(nodes)
	must(t, down.Stop())
	setServices(t, s, ctx, rd, service(t, s, "a", "v2", harness.MinAvailable(minAvailable), slowStart("1s")))
	l := []string{"rollingdeploy=" + rd, "service=a"}
	nodeCount := func(m harness.Samples, state string) float64 {
		v, _ := m.Get("rollkeeper_rollout_nodes", append(l, "state="+state)...)
		return v
	}
	_, err = harness.WaitScrapeAs(ctx, opAddr, opToken, rolloutTime, "operator metrics: 4 of 5 updated, node-5 unreachable", func(m harness.Samples) string {
		if msg := rolloutCheck(m, rd, "a"); msg != "" {
			return msg
		}
		progress, _ := m.Get("rollkeeper_rollout_progress_ratio", l...)
		headroom, _ := m.Get("rollkeeper_quorum_headroom", l...)
		if nodeCount(m, "updated") != nodes-1 || nodeCount(m, "unreachable") != 1 || progress != float64(nodes-1)/nodes || headroom != nodes-1-minAvailable {
			return fmt.Sprintf("updated %v unreachable %v progress %v headroom %v", nodeCount(m, "updated"), nodeCount(m, "unreachable"), progress, headroom)
		}
		return ""
	})
	must(t, err)
	must(t, down.Start())
	_, err = s.WaitForReady(ctx, rd, rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))

	m, err := harness.WaitScrapeAs(ctx, opAddr, opToken, time.Minute, "operator metrics of v2 complete", func(m harness.Samples) string {
		if msg := rolloutCheck(m, rd, "a"); msg != "" {
			return msg
		}
		progress, _ := m.Get("rollkeeper_rollout_progress_ratio", l...)
		headroom, _ := m.Get("rollkeeper_quorum_headroom", l...)
		complete, _ := m.Get("rollkeeper_rollout_phase", append(l, "phase=Complete")...)
		if nodeCount(m, "total") != nodes || nodeCount(m, "updated") != nodes || nodeCount(m, "online") != nodes || nodeCount(m, "unreachable") != 0 ||
			progress != 1 || headroom != nodes-minAvailable || complete != 1 {
			return fmt.Sprintf("total %v updated %v online %v unreachable %v progress %v headroom %v complete %v", nodeCount(m, "total"),
				nodeCount(m, "updated"), nodeCount(m, "online"), nodeCount(m, "unreachable"), progress, headroom, complete)
		}
		return ""
	})
	must(t, err)
	stop()
	wg.Wait()
	t.Logf("operator scrapes during the rollout: %d", scrapes)
	if len(inconsistent) > 0 {
		t.Errorf("inconsistent operator metrics during the rollout: %v", inconsistent)
	}
	if v, _ := m.Get("rollkeeper_rollingdeploy_phase", "rollingdeploy="+rd, "phase=Complete"); v != 1 {
		t.Errorf("rollkeeper_rollingdeploy_phase{phase=Complete} = %v", v)
	}

	// Every agent: on v2 and up with a live ZooKeeper session; the nodes that upgraded timed a
	// restart of at least the fixture's 1s startup delay (node-5 came back on v2 directly); each
	// received at least v2's artifact over BitTorrent, from peers or the origin.
	art, err := s.FixtureArtifact("a", "v2", false) // the one v2's spec points at (cached)
	must(t, err)
	size := art.Size
	uploaded := map[string]float64{} // by node, from its last scrape
	for _, n := range s.Nodes {
		_, err := harness.WaitScrape(ctx, n.MetricsAddr, time.Minute, n.Name+" metrics on v2", func(m harness.Samples) string {
			info, _ := m.Get("rollkeeper_agent_service_info", "service=a", "version=v2")
			up, _ := m.Get("rollkeeper_agent_service_up", "service=a")
			session, _ := m.Get("rollkeeper_agent_zookeeper_session_state")
			_, old := m.Get("rollkeeper_agent_service_info", "service=a", "version=v1")
			if info != 1 || old || up != 1 || session != 1 {
				return fmt.Sprintf("info v2 %v (v1 still there: %t) up %v session %v", info, old, up, session)
			}
			if _, ok := m.Get("go_goroutines"); !ok {
				return "no Go runtime metrics"
			}
			l := []string{"service=a", "version=v2"}
			peers, _ := m.Get("rollkeeper_agent_p2p_downloaded_bytes_total", append(l, "source=peers")...)
			origin, _ := m.Get("rollkeeper_agent_p2p_downloaded_bytes_total", append(l, "source=origin")...)
			if peers+origin < float64(size) {
				return fmt.Sprintf("v2 received %v bytes from peers and %v from the origin, want at least the artifact's %d", peers, origin, size)
			}
			served, _ := m.Get("rollkeeper_agent_p2p_uploaded_bytes_total", l...)
			uploaded[n.Name] = served
			if n == down {
				return ""
			}
			restarts, _ := m.Get("rollkeeper_agent_restart_duration_seconds", "service=a")
			seconds, _ := m.Get("rollkeeper_agent_restart_duration_seconds_sum", "service=a")
			upgrades, _ := m.Get("rollkeeper_agent_upgrades_total", "service=a", "result=success")
			if restarts != 1 || seconds < 1 || upgrades != 1 {
				return fmt.Sprintf("restarts %v taking %vs, successful upgrades %v", restarts, seconds, upgrades)
			}
			return ""
		})
		must(t, err)
	}

	t.Logf("bytes of v2 (a %d-byte artifact) each agent served to its peers: %v", size, uploaded)

	// ZooKeeper restarts: the operator's and the agents' session state drop to 0 and come back,
	// and each counts the reconnect.
	zk := s.ZooKeeper.Servers[0]
	zk.Stop()
	_, err = harness.WaitScrapeAs(ctx, opAddr, opToken, time.Minute, "operator without a ZooKeeper session", func(m harness.Samples) string {
		if v, _ := m.Get("rollkeeper_zookeeper_session_state"); v != 0 {
			return fmt.Sprintf("session state %v", v)
		}
		return ""
	})
	must(t, err)
	must(t, zk.Start())
	must(t, zk.WaitReady(ctx, time.Minute))
	for _, addr := range append([]string{opAddr}, nodeMetricsAddrs(s)...) {
		prefix, token := "rollkeeper_agent_", ""
		if addr == opAddr {
			prefix, token = "rollkeeper_", opToken
		}
		_, err := harness.WaitScrapeAs(ctx, addr, token, time.Minute, addr+" reconnected to ZooKeeper", func(m harness.Samples) string {
			state, _ := m.Get(prefix + "zookeeper_session_state")
			reconnects, _ := m.Get(prefix + "zookeeper_reconnects_total")
			if state != 1 || reconnects < 1 {
				return fmt.Sprintf("session state %v, reconnects %v", state, reconnects)
			}
			return ""
		})
		must(t, err)
	}

	// v3 is unhealthy: the node that tries it rolls back and counts the failure; the operator
	// reports the failed node and phase.
	setServices(t, s, ctx, rd, service(t, s, "a", "v3", harness.MinAvailable(minAvailable), harness.Unhealthy()))
	_, err = s.WaitForCondition(ctx, rd, rkv1alpha1.ConditionDegraded, metav1.ConditionTrue, rkv1alpha1.ReasonHealthCheckFailed, rolloutTime)
	must(t, err)
	var agentReport []string
	err = harness.WaitFor(ctx, time.Minute, "agents count the health check failure and the rollback", func(ctx context.Context) (bool, error) {
		var failures, rollbacks float64
		agentReport = agentReport[:0]
		for _, n := range s.Nodes {
			m, err := harness.Scrape(ctx, n.MetricsAddr)
			if err != nil {
				return false, err
			}
			f, _ := m.Get("rollkeeper_agent_health_check_failures_total", "service=a")
			r, _ := m.Get("rollkeeper_agent_upgrades_total", "service=a", "result=rollback")
			failures, rollbacks = failures+f, rollbacks+r
			agentReport = append(agentReport, fmt.Sprintf("%s: failures %v rollbacks %v", n.Name, f, r))
		}
		return failures >= 1 && rollbacks >= 1, nil
	})
	if err != nil {
		t.Fatalf("%v: %v", err, agentReport)
	}
	t.Logf("agents after the unhealthy version: %v", agentReport)
	_, err = harness.WaitScrapeAs(ctx, opAddr, opToken, time.Minute, "operator metrics of the failed v3", func(m harness.Samples) string {
		l := []string{"rollingdeploy=" + rd, "service=a"}
		failed, _ := m.Get("rollkeeper_rollout_nodes", append(l, "state=failed")...)
		phase, _ := m.Get("rollkeeper_rollout_phase", append(l, "phase=Failed")...)
		if failed < 1 || phase != 1 {
			return fmt.Sprintf("failed nodes %v, phase Failed %v", failed, phase)
		}
		return rolloutCheck(m, rd, "a")
	})
	must(t, err)

	// Deleting the RollingDeploy leaves no stale series.
	obj, err := s.GetRD(ctx, rd)
	must(t, err)
	must(t, s.Client.Delete(ctx, obj))
	_, err = harness.WaitScrapeAs(ctx, opAddr, opToken, time.Minute, "no series of the deleted RollingDeploy", func(m harness.Samples) string {
		for _, name := range []string{"rollkeeper_rollout_nodes", "rollkeeper_rollout_progress_ratio", "rollkeeper_rollout_phase",
			"rollkeeper_rollingdeploy_phase", "rollkeeper_quorum_headroom", "rollkeeper_quorum_min_available"} {
			if m.Has(name, "rollingdeploy="+rd) {
				return name + " still has series of " + rd
			}
		}
		return ""
	})
	must(t, err)
}

// nodeMetricsAddrs lists every agent's metrics address.
func nodeMetricsAddrs(s *harness.Stack) []string {
	var out []string
	for _, n := range s.Nodes {
		out = append(out, n.MetricsAddr)
	}
	return out
}
