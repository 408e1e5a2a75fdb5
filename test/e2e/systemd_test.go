package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/systemd"
)

// The agent with --backend=systemd against a real systemd (test/systemd): the admin's unit runs
// the service from the agent-managed current link; the agent rolls it from v1 to v2 through
// D-Bus, and the service, supervised by systemd, keeps serving while the agent is down and is
// adopted (not restarted) when the agent comes back.
func TestSystemdBackendRollout(t *testing.T) {
	dir := t.TempDir()
	stackDir := filepath.Join(dir, "stack")
	must(t, os.MkdirAll(stackDir, 0o755))
	sdCtx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sd, err := systemd.Start(sdCtx, filepath.Join(dir, "systemd"), stackDir)
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("systemd log:\n%s", sd.Log())
		}
		if err := sd.Stop(); err != nil {
			t.Errorf("stop systemd: %v", err)
		}
	})

	s, ctx := start(t, harness.Config{Nodes: 1, Dir: stackDir,
		AgentArgs: []string{"--backend=systemd", "--systemd-socket=" + sd.Socket()}})
	n := s.Node(1)
	port, err := s.ServicePort("web")
	must(t, err)
	// The unit as docs/systemd.md shows it: ExecStart under <state-dir>/store/<svc>/current.
	unit := fmt.Sprintf(`[Unit]
Description=web (rolled out by rollkeeper)

[Service]
Type=exec
ExecStart=%s/store/web/current/%s --listen=%s:%d
Restart=on-failure
RestartSec=1s
TimeoutStopSec=10s
`, n.StateDir, harness.FixtureBinary, n.Address, port)
	must(t, sd.InstallUnit(ctx, "rollkeeper-web.service", unit))
	must(t, sd.Reload(ctx))

	deployV1(t, s, ctx, "web", service(t, s, "web", "v1", harness.MinAvailable(0)))
	setServices(t, s, ctx, "web", service(t, s, "web", "v2", harness.MinAvailable(0)))
	_, err = s.WaitForReady(ctx, "web", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "web", "v2", time.Minute))
	pid := mainPID(t, sd, ctx)

	// The agent stops: systemd keeps the service running.
	must(t, n.StopAgent())
	if v, err := n.Version(ctx, port); err != nil || v != "v2" {
		t.Fatalf("with the agent stopped the service answers %q (%v), want v2", v, err)
	}
	must(t, n.Start())
	_, err = s.WaitForReady(ctx, "web", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "web", "v2", time.Minute))
	if got := mainPID(t, sd, ctx); got != pid {
		t.Errorf("the agent's restart restarted the service: main PID %d, was %d", got, pid)
	}
}

// mainPID is the main PID systemd reports for the web unit (running, or the test fails).
func mainPID(t *testing.T, sd *systemd.Systemd, ctx context.Context) uint32 {
	t.Helper()
	conn, err := sd.Connect(ctx)
	must(t, err)
	defer conn.Close()
	props, err := conn.GetUnitTypePropertiesContext(ctx, "rollkeeper-web.service", "Service")
	must(t, err)
	pid, _ := props["MainPID"].(uint32)
	if pid == 0 {
		t.Fatalf("rollkeeper-web.service has no main process: %v", props)
	}
	return pid
}
