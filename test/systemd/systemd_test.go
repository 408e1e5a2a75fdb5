package systemd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The manager boots, runs a unit from a file the test installed, and leaves nothing behind.
func TestStartRunStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	shared := t.TempDir()
	s, err := Start(ctx, t.TempDir(), shared)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	t.Logf("systemd (PID %d here) ready in %s", s.PID(), time.Since(start))

	out := filepath.Join(shared, "out")
	unit := "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo ran >" + out + "'\n"
	if err := s.InstallUnit(ctx, "hello.service", unit); err != nil {
		t.Fatal(err)
	}
	c, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan string, 1)
	if _, err := c.StartUnitContext(ctx, "hello.service", "replace", done); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r != "done" {
			t.Fatalf("start job: %s; log:\n%s", r, s.Log())
		}
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("unit did not run: %v; log:\n%s", err, s.Log())
	}
	if strings.TrimSpace(string(b)) != "ran" {
		t.Fatalf("unit wrote %q", b)
	}
	if _, err := os.Stat("/etc/systemd/system/hello.service"); !os.IsNotExist(err) {
		t.Fatalf("unit file leaked to the host's /etc/systemd/system: %v", err)
	}
	// The host's units are out of the manager's sight, and its root file system is read-only.
	props, err := c.GetUnitPropertiesContext(ctx, "systemd-tmpfiles-setup.service")
	if err != nil || props["LoadState"] != "not-found" {
		t.Fatalf("host unit systemd-tmpfiles-setup.service visible to the manager: %v %v", props["LoadState"], err)
	}

	leaves := append([]string(nil), s.leaves...)
	if len(leaves) == 0 {
		t.Fatal("no cgroup leaves recorded")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves {
		if _, err := os.Stat(l); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left after Stop: %v", l, err)
		}
	}
}
