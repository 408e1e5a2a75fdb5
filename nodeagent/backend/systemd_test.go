package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/test/systemd"
)

// node is a state dir laid out like the agent's store (store/<svc>/versions/<v>, current ->
// versions/<v>) holding the fixture service, and a real systemd that can see it.
type node struct {
	t     *testing.T
	ctx   context.Context
	sd    *systemd.Systemd
	dir   string
	port  int
	store string
}

func newNode(t *testing.T, versions ...string) *node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	sd, err := systemd.Start(ctx, t.TempDir(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sd.Stop(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("systemd log:\n%s", sd.Log())
			b, _ := os.ReadFile(filepath.Join(dir, "service.log"))
			t.Logf("service log:\n%s", b)
		}
	})
	n := &node{t: t, ctx: ctx, sd: sd, dir: dir, port: freePort(t), store: filepath.Join(dir, "store")}
	bin := fixtureBinary(t)
	for _, v := range versions {
		vd := filepath.Join(n.store, "web", "versions", v)
		if err := os.MkdirAll(vd, 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, bin, filepath.Join(vd, "rollkeeper-fixture"))
		if err := os.WriteFile(filepath.Join(vd, "VERSION"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// current is the agent's stable path of the running version.
func (n *node) current(svc string) string { return filepath.Join(n.store, svc, "current") }

// switchTo points current at version v, as the store does (rename over the old link).
func (n *node) switchTo(svc, v string) {
	n.t.Helper()
	tmp := n.current(svc) + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join("versions", v), tmp); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Rename(tmp, n.current(svc)); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) spec(v string) Spec {
	return Spec{Version: v, Dir: n.current("web"),
		Command: []string{filepath.Join(n.current("web"), "rollkeeper-fixture")},
		Args:    []string{fmt.Sprintf("--listen=127.0.0.1:%d", n.port)}, StopGrace: 5 * time.Second}
}

// installUnit installs the admin's unit for svc: it runs the fixture from the current link.
func (n *node) installUnit(svc string, extra string) {
	n.t.Helper()
	unit := fmt.Sprintf(`[Unit]
Description=rollkeeper test service %[1]s

[Service]
Type=exec
ExecStart=%[2]s/rollkeeper-fixture --listen=127.0.0.1:%[3]d
StandardOutput=append:%[4]s/service.log
StandardError=append:%[4]s/service.log
%[5]s
`, svc, n.current(svc), n.port, n.dir, extra)
	if err := n.sd.InstallUnit(n.ctx, "rollkeeper-"+svc+".service", unit); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) backend(manage bool) *Systemd {
	b := NewSystemd(SystemdConfig{Socket: n.sd.Socket(), Log: testr.New(n.t), ManageUnits: manage,
		CurrentLink: func(svc string) string { return filepath.Join(n.store, svc, "current") }})
	n.t.Cleanup(b.Close)
	return b
}

// serves waits until the service answers /version with v.
func (n *node) serves(v string) {
	n.t.Helper()
	var last string
	waitUntil(n.t, "service serves "+v, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/version", n.port))
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		last = strings.TrimSpace(string(b))
		return last == v
	})
}

// down waits until nothing listens on the service's port.
func (n *node) down() {
	n.t.Helper()
	waitUntil(n.t, "service port closed", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

// The agent's upgrade against a real systemd: start v1, stop, switch the link, start v2.
func TestSystemdUpgrade(t *testing.T) {
	n := newNode(t, "v1", "v2")
	n.switchTo("web", "v1")
	n.installUnit("web", "Restart=on-failure\nRestartSec=100ms")
	b := n.backend(false)
	ctx := n.ctx

	if st := b.Status("web"); st.Running {
		t.Fatalf("running before start: %+v", st)
	}
	if err := b.Start(ctx, "web", n.spec("v1")); err != nil {
		t.Fatal(err)
	}
	n.serves("v1")
	st := b.Status("web")
	if !st.Running || st.Version != "v1" || st.PID <= 0 || st.Restarts != 0 || st.LastExit != "" {
		t.Fatalf("status after start = %+v", st)
	}
	if err := b.Start(ctx, "web", n.spec("v1")); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second start: %v", err)
	}

	// A crash: systemd restarts the service and the status shows it.
	conn, err := n.sd.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.KillUnitWithTarget(ctx, "rollkeeper-web.service", sdbus.Main, int32(syscall.SIGKILL)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "restart after crash", func() bool { s := b.Status("web"); return s.Restarts == 1 && s.Running })
	n.serves("v1")
	if st := b.Status("web"); !strings.Contains(st.LastExit, "restarted") {
		t.Fatalf("status after crash = %+v", st)
	}

	if err := b.Stop(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	n.down()
	if st := b.Status("web"); st.Running || st.PID != 0 {
		t.Fatalf("status after stop = %+v", st)
	}
	if err := b.Stop(ctx, "web"); err != nil {
		t.Fatalf("stopping a stopped service: %v", err)
	}

	n.switchTo("web", "v2")
	if err := b.Start(ctx, "web", n.spec("v2")); err != nil {
		t.Fatal(err)
	}
	n.serves("v2")
	if st := b.Status("web"); !st.Running || st.Version != "v2" || st.Restarts != 0 {
		t.Fatalf("status after upgrade = %+v", st)
	}

	// A new agent (a new backend) finds the running version through the current link.
	if st := n.backend(false).Status("web"); !st.Running || st.Version != "v2" {
		t.Fatalf("status seen by a restarted agent = %+v", st)
	}
	if err := b.Stop(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	n.down()
}

// A start job that fails reports why: the unit's state and the main process's exit.
func TestSystemdStartFails(t *testing.T) {
	n := newNode(t, "v1")
	if err := os.MkdirAll(filepath.Join(n.store, "web", "versions", "broken"), 0o755); err != nil {
		t.Fatal(err)
	}
	n.switchTo("web", "broken") // no binary there
	n.installUnit("web", "")
	b := n.backend(false)
	err := b.Start(n.ctx, "web", n.spec("broken"))
	if err == nil {
		t.Fatal("start of a version without its binary succeeded")
	}
	for _, want := range []string{"rollkeeper-web.service", "job failed", "ActiveState=failed", "Result=exit-code", "status 203"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Log(err)
	if st := b.Status("web"); st.Running || !strings.Contains(st.LastExit, "exit-code") {
		t.Fatalf("status after failed start = %+v", st)
	}
	// The failed unit starts again once the link is fixed (reset-failed, no start limit).
	n.switchTo("web", "v1")
	if err := b.Start(n.ctx, "web", n.spec("v1")); err != nil {
		t.Fatal(err)
	}
	n.serves("v1")
	if err := b.Stop(n.ctx, "web"); err != nil {
		t.Fatal(err)
	}
}

func TestSystemdUnitNotFound(t *testing.T) {
	n := newNode(t, "v1")
	n.switchTo("web", "v1")
	b := n.backend(false)
	err := b.Start(n.ctx, "web", n.spec("v1"))
	if !errors.Is(err, ErrUnitNotFound) {
		t.Fatalf("start without a unit: %v", err)
	}
	for _, want := range []string{"rollkeeper-web.service", "install", n.current("web") + "/rollkeeper-fixture --listen="} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Log(err)
	if st := b.Status("web"); st.Running {
		t.Fatalf("status = %+v", st)
	}
	if err := b.Stop(n.ctx, "web"); err != nil {
		t.Fatalf("stop without a unit: %v", err)
	}
}

func TestSystemdUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "no-systemd-here")
	b := NewSystemd(SystemdConfig{Socket: sock, Log: testr.New(t)})
	defer b.Close()
	ctx := context.Background()
	err := b.Start(ctx, "web", Spec{Version: "v1", Command: []string{"/bin/true"}})
	if !errors.Is(err, ErrSystemdUnreachable) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("start: %v", err)
	}
	t.Log(err)
	if err := b.Stop(ctx, "web"); !errors.Is(err, ErrSystemdUnreachable) {
		t.Fatalf("stop: %v", err)
	}
	if st := b.Status("web"); st != (Status{}) {
		t.Fatalf("status = %+v", st)
	}
}

// A D-Bus connection that drops (systemd re-executed, bus restarted) is dialed again.
func TestSystemdReconnects(t *testing.T) {
	n := newNode(t, "v1")
	n.switchTo("web", "v1")
	n.installUnit("web", "")
	b := n.backend(false)
	if err := b.Start(n.ctx, "web", n.spec("v1")); err != nil {
		t.Fatal(err)
	}
	n.serves("v1")
	b.mu.Lock()
	old := b.conn
	b.mu.Unlock()
	if err := n.sd.DropConnections(n.ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the backend's connection dropped", func() bool { return !old.Connected() })
	waitUntil(t, "status after the connection dropped", func() bool { s := b.Status("web"); return s.Running && s.Version == "v1" })
	b.mu.Lock()
	reconnected := b.conn != nil && b.conn != old
	b.mu.Unlock()
	if !reconnected {
		t.Fatal("status did not come from a new connection")
	}
	if err := b.Stop(n.ctx, "web"); err != nil {
		t.Fatal(err)
	}
	n.down()
}

// With ManageUnits the agent needs no unit file: each start is a transient unit.
func TestSystemdTransientUnits(t *testing.T) {
	n := newNode(t, "v1", "v2")
	n.switchTo("web", "v1")
	b := n.backend(true)
	spec := n.spec("v1")
	spec.Env = []string{"ROLLKEEPER_ARTIFACT_DIR=" + n.current("web")}
	if err := b.Start(n.ctx, "web", spec); err != nil {
		t.Fatal(err)
	}
	n.serves("v1")
	if st := b.Status("web"); !st.Running || st.Version != "v1" || st.PID <= 0 {
		t.Fatalf("status = %+v", st)
	}
	if err := b.Start(n.ctx, "web", spec); err == nil {
		t.Fatal("second start succeeded")
	}
	if err := b.Stop(n.ctx, "web"); err != nil {
		t.Fatal(err)
	}
	n.down()
	if st := b.Status("web"); st.Running {
		t.Fatalf("status after stop = %+v", st)
	}
	n.switchTo("web", "v2")
	spec = n.spec("v2")
	if err := b.Start(n.ctx, "web", spec); err != nil {
		t.Fatal(err)
	}
	n.serves("v2")
	if err := b.Stop(n.ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(n.ctx, "web"); err != nil {
		t.Fatalf("stopping a stopped transient unit: %v", err)
	}
}

// fixtureBinary is the fixture service: prebuilt in $ROLLKEEPER_BIN_DIR, else built here.
func fixtureBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("ROLLKEEPER_BIN_DIR"); d != "" {
		if p := filepath.Join(d, "rollkeeper-fixture"); fileExists(p) {
			return p
		}
	}
	out := filepath.Join(t.TempDir(), "rollkeeper-fixture")
	cmd := exec.Command("go", "build", "-o", out, "github.com/rollkeeper/rollkeeper/cmd/fixture")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fixture: %v\n%s", err, b)
	}
	return out
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
