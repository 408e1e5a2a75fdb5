package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// The agent with the exec backend is killed (SIGKILL), started again, stopped (SIGTERM) and
// started again: its host service serves throughout (a poller on its own goroutine sees no
// failed request), stays the same process, and each new agent adopts it: it registers it
// again, in its own session and on the same version, without restarting it.
func TestAgentRestartsAdoptExecService(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 1})
	n := s.Node(1)
	deployV1(t, s, ctx, "web", service(t, s, "web", "v1", harness.MinAvailable(0)))
	port, err := s.ServicePort("web")
	must(t, err)
	zk, err := s.ZK(ctx)
	must(t, err)
	reg := s.Layout.CurrentNode("web", n.Name)
	registration := func() (session int64, version string) {
		data, st, err := zk.Get(ctx, reg)
		if err != nil {
			return 0, ""
		}
		var cur zklayout.Current
		if zklayout.Decode(data, &cur) != nil {
			return 0, ""
		}
		return st.EphemeralOwner, cur.Version
	}
	session, _ := registration()
	before := servicePID(t, n.StateDir, "web")

	poll, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var requests int
	var failures []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			v, err := n.Version(poll, port)
			if poll.Err() != nil {
				return
			}
			mu.Lock()
			requests++
			if err != nil || v != "v1" {
				failures = append(failures, fmt.Sprintf("%s: %q %v", time.Now().Format("15:04:05.000"), v, err))
			}
			mu.Unlock()
			select {
			case <-poll.Done():
				return
			case <-tick.C:
			}
		}
	}()
	stopPoller := func() { cancel(); wg.Wait() }
	defer stopPoller()

	for i, restart := range []struct {
		what string
		down func() error
	}{{"kill -9", n.KillAgent}, {"graceful stop", n.StopAgent}} {
		must(t, restart.down())
		if got := servicePID(t, n.StateDir, "web"); got != before {
			t.Fatalf("after the agent's %s the service record is %+v, was %+v", restart.what, got, before)
		}
		must(t, n.Start())
		var now int64
		var version string
		err := harness.WaitFor(ctx, time.Minute, "the new agent registers web", func(context.Context) (bool, error) {
			now, version = registration()
			return now != 0 && now != session && version == "v1", nil
		})
		if err != nil {
			t.Fatalf("after the agent's %s: %v (session %x version %q, was session %x)", restart.what, err, now, version, session)
		}
		session = now
		if got := servicePID(t, n.StateDir, "web"); got != before {
			t.Errorf("after the agent's %s the service is %+v, was %+v: restarted, not adopted", restart.what, got, before)
		}
		// The log file gathers every run of the agent: one adoption per restart.
		if got := strings.Count(n.Agent.Log(), "adopted host service"); got != i+1 {
			t.Errorf("after the agent's %s its log says \"adopted host service\" %d times, want %d", restart.what, got, i+1)
		}
	}
	stopPoller()
	if len(failures) > 0 {
		t.Errorf("the service failed %d of %d requests across the agent's restarts:\n%s", len(failures), requests, strings.Join(failures, "\n"))
	}
	t.Logf("service pid %d answered all %d requests across a kill -9 and a stop of its agent", before.PID, requests)
}

// execService is the exec backend's record of a service's process.
type execService struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	Version   string `json:"version"`
}

// servicePID reads the record and checks the recorded process runs.
func servicePID(t *testing.T, stateDir, svc string) execService {
	t.Helper()
	var p execService
	b, err := os.ReadFile(filepath.Join(stateDir, "services", svc, "service.pid"))
	must(t, err)
	must(t, json.Unmarshal(b, &p))
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if err != nil {
		t.Fatalf("service %s pid %d is gone: %v", svc, p.PID, err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 20 || f[0] == "Z" || f[19] != strconv.FormatUint(p.StartTime, 10) {
		t.Fatalf("service %s pid %d is not the recorded process: %s", svc, p.PID, stat)
	}
	return p
}
