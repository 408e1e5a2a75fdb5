package backend

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// gone says whether pid has exited (a zombie has: only its parent's wait is missing).
func gone(pid int) bool { return !pidAlive(pid) || isZombie(pid) }

// A service outlives the backend that started it (the agent's death: Close, which ends the
// supervision and signals nothing), and a new backend on the same directory adopts it: same
// process, same version; it notices the adopted process's crash and starts it again, and stops
// it on request.
func TestExecAdoptsAfterAgentDeath(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e1, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Version: "v1", Dir: dir, Command: []string{"/bin/sh", "-c", "echo started $GREETING; exec sleep 300"},
		Env: []string{"GREETING=hello"}, StopGrace: 2 * time.Second}
	if err := e1.Start(ctx, "a", spec); err != nil {
		t.Fatal(err)
	}
	pid := e1.Status("a").PID
	waitUntil(t, "log line", func() bool {
		b, _ := os.ReadFile(e1.LogFile("a"))
		return strings.Contains(string(b), "started hello")
	})
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	e1.Close()
	if gone(pid) {
		t.Fatalf("service pid %d ended with its backend", pid)
	}
	// Its own session: the agent's process group or terminal signals do not reach it.
	if sid, _ := syscall.Getpgid(pid); sid != pid {
		t.Errorf("service's process group is %d, want its own (%d)", sid, pid)
	}

	e2, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.StopAll(context.Background()); e2.Close() })
	st := e2.Status("a")
	if !st.Running || st.PID != pid || st.Version != "v1" {
		t.Fatalf("status after adoption = %+v, want running v1 pid %d", st, pid)
	}
	if err := e2.Start(ctx, "a", spec); err == nil {
		t.Fatal("start of an adopted running service succeeded")
	}

	// The adopted process crashes: the new backend (not its parent) notices and starts it
	// again from the recorded spec.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "restart of the adopted service", func() bool {
		s := e2.Status("a")
		return s.Restarts == 1 && s.PID != pid && !gone(s.PID)
	})
	next := e2.Status("a").PID
	waitUntil(t, "restarted service's log line", func() bool {
		b, _ := os.ReadFile(e2.LogFile("a"))
		return strings.Count(string(b), "started hello") == 2
	})

	// And it survives this backend too, then is stopped by a third.
	e2.Close()
	e3, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e3.Close)
	if s := e3.Status("a"); !s.Running || s.PID != next {
		t.Fatalf("status after second adoption = %+v, want pid %d", s, next)
	}
	if err := e3.Stop(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if s := e3.Status("a"); s.Running {
		t.Fatalf("running after stop: %+v", s)
	}
	waitUntil(t, "adopted process stopped", func() bool { return gone(next) })
	if _, err := os.Stat(filepath.Join(dir, "a", "service.pid")); !os.IsNotExist(err) {
		t.Fatalf("pid file left after stop: %v", err)
	}
}

// A record whose pid now belongs to another process (another start time, or no owner marker)
// is dropped: the process is neither adopted nor signalled.
func TestExecNeverTouchesReusedPID(t *testing.T) {
	dir := t.TempDir()
	other := exec.Command("sleep", "300")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	pid := other.Process.Pid
	_, start, err := procStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	for name, rec := range map[string]execRecord{
		"start time differs": {PID: pid, StartTime: start + 1, BootID: bootID(), Version: "v1", Spec: Spec{Command: []string{"sleep"}}},
		"other boot":         {PID: pid, StartTime: start, BootID: "another-boot", Version: "v1", Spec: Spec{Command: []string{"sleep"}}},
		"no owner marker":    {PID: pid, StartTime: start, BootID: bootID(), Version: "v1", Spec: Spec{Command: []string{"sleep"}}},
	} {
		t.Run(name, func(t *testing.T) {
			svc := strings.ReplaceAll(name, " ", "-")
			if err := os.MkdirAll(filepath.Join(dir, svc), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := writeRecord(filepath.Join(dir, svc, "service.pid"), rec); err != nil {
				t.Fatal(err)
			}
			e, err := NewExec(dir, testr.New(t))
			if err != nil {
				t.Fatal(err)
			}
			if s := e.Status(svc); s.Running {
				t.Errorf("adopted a process it did not start: %+v", s)
			}
			if err := e.Stop(context.Background(), svc); err != nil {
				t.Error(err)
			}
			e.Close()
			if gone(pid) {
				t.Fatalf("unrelated pid %d was signalled", pid)
			}
			if _, err := os.Stat(filepath.Join(dir, svc, "service.pid")); !os.IsNotExist(err) {
				t.Errorf("stale record kept: %v", err)
			}
		})
	}
}

// With LeaveCgroup a service lands in the cgroups of PID 1, in every hierarchy, out of the
// agent's (which a container runtime empties when the agent's container ends). The test
// process stands for the agent; where its cgroups already are PID 1's the move is a no-op, so
// the check only bites on a machine where they differ (as under this project's test runner).
func TestExecLeavesAgentCgroups(t *testing.T) {
	e, err := NewExecConfig(ExecConfig{Dir: t.TempDir(), LeaveCgroup: true, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.StopAll(context.Background()); e.Close() })
	if err := e.Start(context.Background(), "a", Spec{Version: "v1", Command: []string{"sleep", "300"}}); err != nil {
		t.Fatal(err)
	}
	init, err := readCgroups("1")
	if err != nil {
		t.Fatal(err)
	}
	own, err := readCgroups("self")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := readCgroups(strconv.Itoa(e.Status("a").PID))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(svc, init) {
		t.Errorf("service cgroups %v, want PID 1's %v (the test's: %v)", svc, init, own)
	}
	if slices.Equal(own, init) {
		t.Log("the test already runs in PID 1's cgroups: the move was a no-op")
	}
}
