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

func pidAlive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

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
	if !st.Running || st.Version != "v1" || !pidAlive(st.PID) {
		t.Fatalf("status = %+v", st)
	}
	waitUntil(t, "log line", func() bool {
		b, _ := os.ReadFile(e.LogFile("a"))
		return strings.Contains(string(b), "started hello")
	})
	// A crash is restarted with backoff.
	first := st.PID
	_ = syscall.Kill(first, syscall.SIGKILL)
	waitUntil(t, "restart", func() bool { s := e.Status("a"); return s.Restarts == 1 && s.PID != first && pidAlive(s.PID) })
	pid := e.Status("a").PID
	if err := e.Stop(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if s := e.Status("a"); s.Running {
		t.Fatalf("running after stop: %+v", s)
	}
	waitUntil(t, "process gone", func() bool { return !pidAlive(pid) })
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
	t.Cleanup(func() { _ = e.StopAll(context.Background()) })
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

func isZombie(pid int) bool {
	b, _ := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

func itoa(i int) string { return strconv.Itoa(i) }
