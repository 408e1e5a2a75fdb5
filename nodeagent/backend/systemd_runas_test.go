package backend

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// A transient unit runs as the spec's numeric user and group (User=, Group=).
func TestSystemdTransientUnitRunsAsUser(t *testing.T) {
	n := newNode(t)
	// The unit's user writes its ids into a directory of the test's private temp dir.
	out := filepath.Join(n.dir, "ids")
	for _, d := range []string{filepath.Dir(n.dir), n.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(out, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(out, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	b := n.backend(true)
	id := uint32(65534)
	file := filepath.Join(out, "status")
	spec := Spec{Version: "v1", Dir: "/", StopGrace: 5 * time.Second, RunAsUser: &id, RunAsGroup: &id,
		Command: []string{"/bin/sh", "-c", "grep -E '^(Uid|Gid|Groups):' /proc/self/status > " + file + ".tmp && mv " + file + ".tmp " + file + "; exec sleep 300"}}
	if err := b.Start(n.ctx, "web", spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(n.ctx, "web") })
	var got string
	waitUntil(t, "the unit's ids", func() bool {
		bs, err := os.ReadFile(file)
		got = strings.Join(strings.Fields(string(bs)), " ")
		return err == nil
	})
	if want := "Uid: 65534 65534 65534 65534 Gid: 65534 65534 65534 65534 Groups: 65534"; got != want {
		// systemd drops supplementary groups for User= units: Groups may be empty.
		if alt := "Uid: 65534 65534 65534 65534 Gid: 65534 65534 65534 65534 Groups:"; got != alt {
			t.Fatalf("unit ids = %q, want %q", got, want)
		}
	}
}

// The admin's units decide their own user: a spec asking for one is refused, not run as root.
func TestSystemdAdminUnitRefusesRunAsUser(t *testing.T) {
	// Refused before systemd is asked anything: no systemd needed.
	b := NewSystemd(SystemdConfig{Socket: filepath.Join(t.TempDir(), "no-systemd"), Log: testr.New(t)})
	t.Cleanup(b.Close)
	id := uint32(65534)
	spec := Spec{Version: "v1", Command: []string{"/bin/true"}, RunAsUser: &id, RunAsGroup: &id}
	if err := b.Start(context.Background(), "web", spec); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Start = %v, want ErrUnsupported", err)
	}
}
