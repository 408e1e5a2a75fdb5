package backend

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func TestExecStartStopRestart(t *testing.T) {
	dir := t.TempDir()
	e, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec := Spec{Version: "v1", Dir: dir, Command: []string{"/bin/sh", "-c", "echo started $GREETING; exec sleep 300"},
		Env: []string{"GREETING=hello"}, StopGrace: 2 * time.Second}
	if err := e.Start(ctx, "a", spec); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx, "a", spec); err == nil {
		t.Fatal("second start of a running service succeeded")
	}
	st := e.Status("a")
	if !st.Running || st.Version != "v1" || !alive(st.PID) {
		t.Fatalf("status = %+v", st)
	}
	waitUntil(t, "log line", func() bool {
		b, _ := os.ReadFile(e.LogFile("a"))
		return strings.Contains(string(b), "started hello")
	})
	// A crash is restarted with backoff.
	first := st.PID
	_ = syscall.Kill(first, syscall.SIGKILL)
	waitUntil(t, "restart", func() bool { s := e.Status("a"); return s.Restarts == 1 && s.PID != first && alive(s.PID) })
	pid := e.Status("a").PID
	if err := e.Stop(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if s := e.Status("a"); s.Running {
		t.Fatalf("running after stop: %+v", s)
	}
	waitUntil(t, "process gone", func() bool { return !alive(pid) })
	if _, err := os.Stat(filepath.Join(dir, "a", "service.pid")); !os.IsNotExist(err) {
		t.Fatalf("pid file left after stop: %v", err)
	}
}

func TestExecKillsAfterGrace(t *testing.T) {
	e, err := NewExec(t.TempDir(), testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Version: "v1", Command: []string{"/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"}, StopGrace: 300 * time.Millisecond}
	if err := e.Start(context.Background(), "stubborn", spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	waitUntil(t, "shell traps TERM", func() bool {
		b, _ := os.ReadFile("/proc/" + itoa(e.Status("stubborn").PID) + "/status")
		for _, line := range strings.Split(string(b), "\n") {
			if hex, ok := strings.CutPrefix(line, "SigIgn:\t"); ok {
				mask, _ := strconv.ParseUint(hex, 16, 64)
				return mask&(1<<(syscall.SIGTERM-1)) != 0
			}
		}
		return false
	})
	start := time.Now()
	if err := e.Stop(context.Background(), "stubborn"); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped after %s", time.Since(start))
}

// A new backend on the same directory reaps the processes a killed agent left running.
func TestExecReapsStale(t *testing.T) {
	dir := t.TempDir()
	e1, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Start(context.Background(), "a", Spec{Version: "v1", Command: []string{"sleep", "300"}}); err != nil {
		t.Fatal(err)
	}
	// e1 stands for the agent that was killed: it must not restart what the new one reaped.
	t.Cleanup(func() { _ = e1.Close(context.Background()) })
	pid := e1.Status("a").PID
	if _, err := NewExec(dir, testr.New(t)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "stale process reaped", func() bool { return !alive(pid) || isZombie(pid) })
}

func isZombie(pid int) bool {
	b, _ := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

func itoa(i int) string { return strconv.Itoa(i) }
