// Package systemd runs a real systemd (the host's /lib/systemd/systemd) for tests of code that
// drives systemd over D-Bus. It never mocks anything, and it never touches the host's own
// services: the manager is PID 1 of new PID, mount, UTS, IPC and cgroup namespaces, with
// private tmpfs on /run, /dev and /etc/systemd/system, a private machine ID, read-only /sys and
// /proc/sys, and cgroups confined to a leaf created for it in every hierarchy (removed on Stop).
// It shares the host's network and file systems otherwise, so its services see the test's
// temporary directories and listen on the test's loopback.
//
// The manager boots into an empty target, so only the units a test starts ever run. Its log
// (what PID 1 writes to /dev/console) goes to a file in the test's directory.
package systemd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// Binary is the systemd the tests run (Debian's systemd package).
const Binary = "/lib/systemd/systemd"

// bootTarget is the only unit the manager starts at boot: it pulls in nothing.
const bootTarget = "rollkeeper-test.target"

// busProxySocket is where a systemd-socket-proxyd inside the namespaces relays systemd's
// private socket. A client outside the PID namespace cannot use the private socket directly:
// its peer credentials carry no PID systemd can see, and systemd refuses such connections.
const busProxySocket = "/run/rollkeeper-test/bus"

// cgroupPrefix names the cgroup leaves; the creating process's PID follows, so leaves left by
// a killed test run can be told from those of a running one.
const cgroupPrefix = "rollkeeper-systemd-"

// Systemd is one running manager.
type Systemd struct {
	// Dir holds the manager's log and private files.
	Dir     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	// console is the pty master whose slave is the manager's /dev/console; consoleSlave is held
	// open so the master never reads EOF while systemd reopens its console; logDone closes when
	// the copy into the log ends.
	console, consoleSlave *os.File
	logDone               chan struct{}
	pid                   int      // the manager's PID as seen from the test (not 1)
	leaves                []string // cgroup leaves created for it, one per hierarchy
}

// Start boots a manager under dir and waits until it answers on its private D-Bus socket with
// its boot finished. dir and the shared directories are visible to the manager (and writable)
// at their own paths; the rest of /tmp is not. On error everything already started is torn down.
func Start(ctx context.Context, dir string, shared ...string) (*Systemd, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("systemd: running systemd as PID 1 of new namespaces needs root")
	}
	if _, err := os.Stat(Binary); err != nil {
		return nil, fmt.Errorf("systemd is not installed (run hack/install-deps.sh systemd): %w", err)
	}
	for _, tool := range []string{"unshare", "setpriv", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("systemd: %s (util-linux) is needed to make the namespaces: %w", tool, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range shared {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("systemd: shared directory %q is not absolute", d)
		}
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("systemd: shared directory %q: not a directory (%v)", d, err)
		}
	}
	s := &Systemd{Dir: dir, logPath: filepath.Join(dir, "systemd.log"), exited: make(chan struct{})}
	ready := false
	defer func() {
		if !ready {
			_ = s.Stop()
		}
	}()

	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	sweepStale(mounts)
	leaf := cgroupPrefix + strconv.Itoa(os.Getpid()) + "-" + randomHex(4)
	var procs []string
	for _, m := range mounts {
		p, err := m.makeLeaf(leaf)
		if p != "" {
			s.leaves = append(s.leaves, p)
		}
		if err != nil {
			return nil, err
		}
		procs = append(procs, filepath.Join(p, "cgroup.procs"))
	}
	machineID := filepath.Join(dir, "machine-id")
	if err := os.WriteFile(machineID, []byte(randomHex(16)+"\n"), 0o444); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	pts, err := s.openConsole()
	if err != nil {
		return nil, err
	}

	// The outer shell joins the cgroup leaves first, so that the cgroup namespace unshare makes
	// is rooted at them: whatever the manager creates lands below the leaves.
	outer := `for f in "$@"; do echo $$ >"$f"; done
exec unshare --pid --fork --kill-child --mount --propagation private --uts --ipc --cgroup --mount-proc \
	setpriv --bounding-set -sys_time,-sys_module,-sys_boot /bin/sh -c "$INNER"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", outer, "sh"}, procs...)...)
	cmd.Env = append(os.Environ(), "INNER="+innerScript(mounts, pts, machineID, append([]string{dir}, shared...)))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Whatever happens to the test, the manager goes with it: unshare dies with the test and
	// takes the namespace's PID 1 (and so every process in it) along (--kill-child).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start systemd: %w", err)
	}
	s.cmd = cmd
	go func() { _ = cmd.Wait(); close(s.exited) }()

	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	ready = true
	return s, nil
}

// hostUnitDirs are where the host's units and generators live. They are hidden from the
// manager: only the stand-ins below and the tests' units exist for it. Without this, a unit
// the host ships could run against the host's files (systemd-tmpfiles-setup.service, pulled in
// by sysinit.target, empties /tmp).
var hostUnitDirs = []string{
	"/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system",
	"/etc/systemd/system-generators", "/usr/local/lib/systemd/system-generators",
	"/usr/lib/systemd/system-generators", "/lib/systemd/system-generators",
	"/usr/lib/systemd/system-environment-generators", "/lib/systemd/system-environment-generators",
}

// standIns are empty units that ordinary unit files depend on (a service's default
// dependencies require sysinit.target and run in system.slice), plus the relay of busProxySocket.
var standIns = map[string]string{
	bootTarget:                     "[Unit]\nDescription=rollkeeper test boot target\nDefaultDependencies=no\nWants=rollkeeper-bus-proxy.socket\n",
	"sysinit.target":               "[Unit]\nDefaultDependencies=no\n",
	"basic.target":                 "[Unit]\nDefaultDependencies=no\n",
	"system.slice":                 "[Unit]\nDefaultDependencies=no\n",
	"rollkeeper-bus-proxy.socket":  "[Unit]\nDefaultDependencies=no\n[Socket]\nListenStream=" + busProxySocket + "\nSocketMode=0600\n",
	"rollkeeper-bus-proxy.service": "[Unit]\nDefaultDependencies=no\n[Service]\nExecStart=/lib/systemd/systemd-socket-proxyd /run/systemd/private\n",
}

// innerScript runs as PID 1 of the new namespaces and sets up the private mounts before it
// execs the manager. The host's file systems are read-only for the manager, /tmp and /var/tmp
// are private, and only the shared directories are writable (at their own paths).
func innerScript(mounts []cgroupMount, console, machineID string, shared []string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("set -eu")
	// /run: the manager's sockets and units. What must stay reachable once /dev and /tmp are
	// covered waits below it meanwhile.
	w("mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run")
	w("mkdir -p /run/systemd/system /run/.hostdev /run/.shared")
	for name, content := range standIns {
		w("printf '%s' >/run/systemd/system/%s", content, name)
	}
	for i, d := range shared {
		w("mkdir /run/.shared/%d; mount --bind %s /run/.shared/%d", i, shellQuote(d), i)
	}
	// The manager writes a machine ID when it finds none; it must never write the host's.
	w("mount --bind %s /etc/machine-id", shellQuote(machineID))
	w("mount --rbind /dev /run/.hostdev")
	// A private /dev with the usual nodes: nothing the manager does there reaches the host.
	w("mount -t tmpfs -o mode=755,nosuid tmpfs /dev")
	w("for n in null zero full random urandom tty; do touch /dev/$n; mount --bind /run/.hostdev/$n /dev/$n; done")
	w("touch /dev/console; mount --bind /run/.hostdev/%s /dev/console", strings.TrimPrefix(console, "/dev/"))
	w("umount -l /run/.hostdev; rmdir /run/.hostdev")
	w("mkdir -p /dev/pts /dev/shm; mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm")
	w("ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr")
	w("mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp")
	w("mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp")
	for _, d := range hostUnitDirs {
		w("if [ -d %[1]s ]; then mount -t tmpfs -o mode=755 tmpfs %[1]s; fi", shellQuote(d))
	}
	// Everything else of the host is read-only here: the root file system, kernel settings.
	w("mount -o remount,bind,ro /")
	w("mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys")
	w("mount -o remount,bind,ro /sys")
	for i, d := range shared {
		w("mkdir -p %s; mount --move /run/.shared/%d %s; rmdir /run/.shared/%d", shellQuote(d), i, shellQuote(d), i)
	}
	w("rmdir /run/.shared")
	// The cgroup hierarchies, mounted again inside the cgroup namespace so each shows the leaf
	// as its root. The tmpfs holding them is the host's: read-only.
	if parentIsTmpfs(mounts) {
		w("mount -o remount,bind,ro /sys/fs/cgroup")
	}
	for _, m := range mounts {
		// The kernel refuses a hierarchy mounted on itself: the host's mount leaves this
		// namespace first (nothing changes for the host).
		w("umount -l %s", shellQuote(m.mountPoint))
		w("mount -t %s -o %s rollkeeper-%s %s", m.fstype, shellQuote(m.mountOptions()), m.fstype, shellQuote(m.mountPoint))
	}
	w("export container=rollkeeper-test")
	w("exec %s --system --unit=%s --show-status=no --log-color=no --log-target=console", Binary, bootTarget)
	return b.String()
}

// PID is the manager's process ID in the test's PID namespace.
func (s *Systemd) PID() int { return s.pid }

// Root is the manager's root directory as the test reaches it: paths below it resolve in the
// manager's mount namespace.
func (s *Systemd) Root() string { return fmt.Sprintf("/proc/%d/root", s.pid) }

// Socket is the manager's private D-Bus socket as the test reaches it (through a relay: see
// busProxySocket). It speaks the private socket's protocol: no bus daemon, no Hello.
func (s *Systemd) Socket() string { return filepath.Join(s.Root(), busProxySocket) }

// UnitDir is the manager's /etc/systemd/system (a private tmpfs).
func (s *Systemd) UnitDir() string { return filepath.Join(s.Root(), "etc/systemd/system") }

// Connect opens a D-Bus connection to the manager; the caller closes it.
func (s *Systemd) Connect(ctx context.Context) (*sdbus.Conn, error) {
	return sdbus.NewConnection(func() (*dbus.Conn, error) { return s.dial(ctx) })
}

// dial opens one raw connection; it lives until closed, not just as long as ctx.
func (s *Systemd) dial(ctx context.Context) (*dbus.Conn, error) {
	c, err := dbus.Dial("unix:path="+s.Socket(), dbus.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, err
	}
	// The private socket speaks to the manager directly: no bus daemon, so no Hello.
	if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// InstallUnit writes a unit file into UnitDir and makes the manager reload.
func (s *Systemd) InstallUnit(ctx context.Context, name, content string) error {
	if err := os.WriteFile(filepath.Join(s.UnitDir(), name), []byte(content), 0o644); err != nil {
		return fmt.Errorf("install unit %s: %w", name, err)
	}
	return s.Reload(ctx)
}

// Reload is systemctl daemon-reload; it returns once the manager has reloaded.
func (s *Systemd) Reload(ctx context.Context) error {
	c, err := s.Connect(ctx)
	if err != nil {
		return fmt.Errorf("reload systemd: %w", err)
	}
	defer c.Close()
	if err := c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("reload systemd: %w", err)
	}
	return nil
}

// DropConnections ends every D-Bus connection made through Socket, as a restart of systemd
// (daemon-reexec) or of the bus would: it stops the relay, which the next connection starts
// again. It returns once a connection of its own has been dropped.
func (s *Systemd) DropConnections(ctx context.Context) error {
	c, err := s.dial(ctx)
	if err != nil {
		return fmt.Errorf("drop D-Bus connections: %w", err)
	}
	defer c.Close()
	// No reply can come: the relay carrying it goes away.
	call := c.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").Call(
		"org.freedesktop.systemd1.Manager.StopUnit", dbus.FlagNoReplyExpected, "rollkeeper-bus-proxy.service", "replace")
	if call.Err != nil {
		return fmt.Errorf("drop D-Bus connections: %w", call.Err)
	}
	select {
	case <-c.Context().Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drop D-Bus connections: waiting for the relay to stop: %w", ctx.Err())
	}
}

// Log returns the manager's log so far.
func (s *Systemd) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// waitReady finds the manager's PID, then polls its socket until it reports its boot done.
func (s *Systemd) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := errors.New("not started")
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("systemd exited during start; log %s:\n%s", s.logPath, s.Log())
		default:
		}
		if s.pid == 0 {
			s.pid = childOf(s.cmd.Process.Pid)
		}
		if s.pid != 0 {
			if last = s.booted(ctx); last == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("systemd not ready after %s (last: %v); log %s:\n%s", timeout, last, s.logPath, s.Log())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
}

func (s *Systemd) booted(ctx context.Context) error {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", s.pid)); err != nil || !strings.HasSuffix(exe, "/systemd") {
		return fmt.Errorf("PID 1 has not yet exec'd systemd (exe %q)", exe)
	}
	if _, err := os.Stat(s.Socket()); err != nil {
		return err
	}
	c, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.SystemStateContext(ctx)
	if err != nil {
		return err
	}
	if v := strings.Trim(st.Value.String(), `"`); v != "running" && v != "degraded" {
		return fmt.Errorf("system state %s", v)
	}
	return nil
}

// Stop kills the manager and every process of its namespaces, waits for them to be gone and
// removes the cgroups made for it. It is safe to call more than once.
func (s *Systemd) Stop() error {
	if s.cmd != nil {
		// SIGKILL to PID 1 of a PID namespace ends every process in it; unshare returns once
		// they are all reaped. Killing the shell's group covers a failure before systemd ran.
		if s.pid != 0 {
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
		}
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		s.cmd = nil
	}
	if s.console != nil {
		s.consoleSlave.Close()
		s.console.Close()
		<-s.logDone
		s.console = nil
	}
	var errs []error
	for _, l := range s.leaves {
		errs = append(errs, removeTree(l, 10*time.Second))
	}
	s.leaves = nil
	return errors.Join(errs...)
}

// openConsole makes the pty that serves as the manager's /dev/console (systemd logs only to a
// terminal) and copies what it shows into the log. It returns the slave's path.
func (s *Systemd) openConsole() (string, error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("console pty: %w", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0)
	}
	if err != nil {
		m.Close()
		return "", fmt.Errorf("console pty: %w", err)
	}
	pts := "/dev/pts/" + strconv.Itoa(n)
	slave, err := os.OpenFile(pts, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return "", fmt.Errorf("console pty: %w", err)
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.Close()
		slave.Close()
		return "", err
	}
	s.console, s.consoleSlave, s.logDone = m, slave, make(chan struct{})
	go func() {
		defer close(s.logDone)
		defer logf.Close()
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			if n > 0 {
				_, _ = logf.Write(bytes.ReplaceAll(buf[:n], []byte("\r"), nil))
			}
			if err != nil {
				return // the master was closed by Stop
			}
		}
	}()
	return pts, nil
}

// childOf returns a child process of pid (unshare has exactly one), 0 if none yet.
func childOf(pid int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state, ppid, ...
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			return p
		}
	}
	return 0
}

// cgroupMount is one cgroup hierarchy as mounted on the host, and where the test process sits
// in it.
type cgroupMount struct {
	fstype     string // cgroup or cgroup2
	mountPoint string
	superOpts  []string
	dir        string // the test process's cgroup, as a host path
}

// cgroupMounts lists the host's cgroup hierarchies (one mount each) and the test process's
// cgroup in each.
func cgroupMounts() ([]cgroupMount, error) {
	own := map[string]string{} // controllers ("" for cgroup2) -> path
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			own[parts[1]] = parts[2]
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || (qf[0] != "cgroup" && qf[0] != "cgroup2") {
			continue
		}
		m := cgroupMount{fstype: qf[0], mountPoint: pf[4], superOpts: strings.Split(qf[2], ",")}
		root := pf[3]
		key := "" // the /proc/self/cgroup key of this hierarchy
		if m.fstype == "cgroup" {
			for k := range own {
				if k != "" && containsAll(m.superOpts, strings.Split(k, ",")) {
					key = k
				}
			}
			if key == "" {
				continue
			}
		}
		path, ok := own[key]
		if !ok || seen[key] {
			continue
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("cgroup %s: own cgroup %s is outside the mount %s at %s", key, path, root, m.mountPoint)
		}
		m.dir = filepath.Join(m.mountPoint, rel)
		seen[key] = true
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("systemd: no cgroup file system is mounted")
	}
	return out, sc.Err()
}

// makeLeaf creates the leaf cgroup name below the test's own cgroup and returns its path.
func (m cgroupMount) makeLeaf(name string) (string, error) {
	p := filepath.Join(m.dir, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		return "", fmt.Errorf("cgroup leaf: %w", err)
	}
	if slices.Contains(m.superOpts, "cpuset") {
		// A new cpuset cgroup has no CPUs or memory nodes, and a process cannot join it.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(m.dir, f))
			if err == nil {
				err = os.WriteFile(filepath.Join(p, f), b, 0o644)
			}
			if err != nil {
				return p, fmt.Errorf("cgroup leaf %s: %w", p, err)
			}
		}
	}
	return p, nil
}

// mountOptions are the super options to mount the hierarchy again with.
func (m cgroupMount) mountOptions() string {
	var o []string
	for _, s := range m.superOpts {
		// release_agent is the host's business (and only settable at the hierarchy's root).
		if s == "rw" || s == "ro" || strings.HasPrefix(s, "release_agent=") {
			continue
		}
		o = append(o, s)
	}
	if len(o) == 0 {
		return "defaults"
	}
	return strings.Join(o, ",")
}

func parentIsTmpfs(mounts []cgroupMount) bool {
	for _, m := range mounts {
		if m.fstype == "cgroup2" && m.mountPoint == "/sys/fs/cgroup" {
			return false
		}
	}
	var st syscall.Statfs_t
	return syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == 0x01021994 // TMPFS_MAGIC
}

// sweepStale removes cgroup leaves left by test processes that are gone (a test killed before
// its cleanup ran). Only empty cgroups can be removed, so nothing running is touched.
func sweepStale(mounts []cgroupMount) {
	for _, m := range mounts {
		matches, _ := filepath.Glob(filepath.Join(m.dir, cgroupPrefix+"*"))
		for _, p := range matches {
			pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(p), cgroupPrefix), "-")
			pid, err := strconv.Atoi(pidStr)
			if err != nil || syscall.Kill(pid, 0) == nil {
				continue
			}
			_ = removeTree(p, time.Second)
		}
	}
}

// removeTree removes the cgroup dir and its descendants, deepest first. A cgroup whose last
// process has just exited can be busy for a moment, so each rmdir is retried until timeout.
func removeTree(dir string, timeout time.Duration) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	deadline := time.Now().Add(timeout)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := syscall.Rmdir(dirs[i])
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
	}
	return nil
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
