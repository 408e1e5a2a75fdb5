package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/cluster"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// serviceProc is the host service's process as the exec backend records it.
type serviceProc struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	Version   string `json:"version"`
}

func readServiceProc(stateDir, svc string) (serviceProc, error) {
	var p serviceProc
	b, err := os.ReadFile(filepath.Join(stateDir, "services", svc, "service.pid"))
	if err != nil {
		return p, err
	}
	return p, json.Unmarshal(b, &p)
}

// startTime is field 22 of /proc/<pid>/stat; ok is false once the process has exited.
func startTime(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, err == nil
}

// poller asks the service for its version every 75 ms on its own goroutine and records every
// failure, until stop.
type poller struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	requests int
	failures []string
}

func startPoller(ctx context.Context, url, version string) *poller {
	ctx, cancel := context.WithCancel(ctx)
	p := &poller{cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(75 * time.Millisecond)
		defer t.Stop()
		for {
			got, err := httpGet(ctx, url)
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.requests++
			if err != nil || got != version {
				p.failures = append(p.failures, fmt.Sprintf("%s: %q %v", time.Now().Format("15:04:05.000"), got, err))
			}
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *poller) stop() (requests int, failures []string) {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests, p.failures
}

// checkAgentRestartsKeepService shows that nothing done to the agent stops the host service it
// runs with the chart's defaults: a `kubectl rollout restart` of the agent's DaemonSet and a
// `kill -9` of the agent process leave the service serving throughout, as the same process,
// and the next agent adopts it (its registration comes back, in the new agent's session, on the
// same version; its log says so). This host has no systemd, so backend auto picks exec.
func checkAgentRestartsKeepService(t *testing.T, ctx context.Context, c *cluster.Cluster, zkServers, stateDir, podLogs, url, version string) {
	t.Helper()
	before, err := readServiceProc(stateDir, "web")
	if err != nil {
		t.Fatalf("the exec backend's record of the host service: %v", err)
	}
	if st, ok := startTime(before.PID); !ok || st != before.StartTime || before.Version != version {
		t.Fatalf("recorded service %+v: running %v, start time %d", before, ok, st)
	}
	// Out of the pod's cgroups, which the runtime empties when the pod ends.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", before.PID))
	if err != nil || strings.Contains(string(cg), "kubepods") {
		t.Errorf("host service pid %d is in the pod's cgroups: %v\n%s", before.PID, err, cg)
	}

	zk, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(zkServers), SessionTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer zk.Close()
	layout, err := zklayout.New("/rollkeeper-cluster-e2e")
	if err != nil {
		t.Fatal(err)
	}
	reg := layout.CurrentNode("web", c.NodeName)
	owner := func() (int64, string, error) {
		data, st, err := zk.Get(ctx, reg)
		if err != nil {
			return 0, "", err
		}
		var cur zklayout.Current
		if err := zklayout.Decode(data, &cur); err != nil {
			return 0, "", err
		}
		return st.EphemeralOwner, cur.Version, nil
	}
	session, _, err := owner()
	if err != nil {
		t.Fatalf("registration %s: %v", reg, err)
	}
	// adopted waits for the registration to come back in a new agent session, on version.
	adopted := func(what string, old int64) int64 {
		t.Helper()
		var now int64
		var got string
		err := harness.WaitFor(ctx, 2*time.Minute, what+": the new agent registers the service", func(ctx context.Context) (bool, error) {
			var err error
			now, got, err = owner()
			return err == nil && now != old && got == version, nil
		})
		if err != nil {
			t.Fatalf("%v (session %x, version %q; was session %x)\npods:\n%s", err, now, got, old, describePods(ctx, c))
		}
		return now
	}
	samePID := func(what string) {
		t.Helper()
		after, err := readServiceProc(stateDir, "web")
		if err != nil || after != before {
			t.Errorf("%s: service record %+v (%v), want %+v", what, after, err, before)
		}
		if st, ok := startTime(before.PID); !ok || st != before.StartTime {
			t.Errorf("%s: service pid %d is gone or another process", what, before.PID)
		}
	}

	p := startPoller(ctx, url, version)
	defer p.stop()

	// kubectl rollout restart daemonset: the pod template's restartedAt annotation.
	ds := &appsv1.DaemonSet{}
	dsKey := client.ObjectKey{Namespace: namespace, Name: release + "-rollkeeper-agent"}
	if err := c.Client.Get(ctx, dsKey, ds); err != nil {
		t.Fatal(err)
	}
	oldPods := map[types.UID]bool{}
	for _, p := range agentPods(t, ctx, c, ds) {
		oldPods[p.UID] = true
	}
	patch := client.MergeFrom(ds.DeepCopy())
	if ds.Spec.Template.Annotations == nil {
		ds.Spec.Template.Annotations = map[string]string{}
	}
	ds.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = time.Now().Format(time.RFC3339)
	if err := c.Client.Patch(ctx, ds, patch); err != nil {
		t.Fatalf("rollout restart: %v", err)
	}
	err = harness.WaitFor(ctx, 3*time.Minute, "the restarted agent pod ready", func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, dsKey, ds); err != nil {
			return false, err
		}
		pods := agentPods(t, ctx, c, ds)
		if len(pods) != 1 || oldPods[pods[0].UID] {
			return false, nil
		}
		return ds.Status.ObservedGeneration >= ds.Generation && ds.Status.UpdatedNumberScheduled == 1 && podReady(pods[0]), nil
	})
	if err != nil {
		t.Fatalf("%v\npods:\n%s", err, describePods(ctx, c))
	}
	session = adopted("after rollout restart", session)
	samePID("after rollout restart")

	// kill -9 of the agent process (host PID namespace: it is a process of this host).
	agent := agentProcess(t, stateDir)
	t.Logf("killing the agent, pid %d", agent)
	if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	adopted("after kill -9 of the agent", session)
	samePID("after kill -9 of the agent")

	requests, failures := p.stop()
	if len(failures) > 0 {
		t.Errorf("the host service failed %d of %d requests while the agent restarted:\n%s", len(failures), requests, strings.Join(failures, "\n"))
	}
	t.Logf("host service pid %d served all %d requests through a rollout restart and a kill -9 of the agent", before.PID, requests)
	if n := adoptionsLogged(t, podLogs); n < 2 {
		t.Errorf("agent logs say \"adopted\" %d times, want at least 2 (one per restart)", n)
	}
}

func agentPods(t *testing.T, ctx context.Context, c *cluster.Cluster, ds *appsv1.DaemonSet) []corev1.Pod {
	t.Helper()
	pods := &corev1.PodList{}
	if err := c.Client.List(ctx, pods, client.InNamespace(namespace), client.MatchingLabels(ds.Spec.Selector.MatchLabels)); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func podReady(p corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// agentProcess finds the agent's pid among the host's processes: the one running with this
// test's state dir.
func agentProcess(t *testing.T, stateDir string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) == "agent" && slices.Contains(args, "--state-dir="+stateDir) {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		t.Fatalf("agent processes with --state-dir=%s: %v, want one", stateDir, found)
	}
	return found[0]
}

// adoptionsLogged counts the agent container log lines (the current pod's containers, the
// restarted one's previous log included) saying a host service was adopted.
func adoptionsLogged(t *testing.T, podLogs string) int {
	n := 0
	err := filepath.WalkDir(podLogs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, "rollkeeper-agent") || !strings.HasSuffix(p, ".log") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n += bytes.Count(b, []byte("adopted host service"))
		return nil
	})
	if err != nil {
		t.Errorf("agent logs under %s: %v", podLogs, err)
	}
	return n
}
