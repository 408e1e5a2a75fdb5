package localstack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultStopGrace is how long Stop waits after SIGTERM before SIGKILL.
const DefaultStopGrace = 15 * time.Second

// Process is a child process (operator, agent, fixture) with its output in a log file. It can
// be stopped, killed and started again; every start appends to the same log. The process dies
// with the harness (SIGKILL on parent death).
type Process struct {
	Name string
	Path string
	Args []string
	// Env is added to the harness's own environment.
	Env []string
	Dir string
	// LogPath receives stdout and stderr.
	LogPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	starts int
}

// Start launches the process. It fails if the process is running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("start %s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	if err := os.MkdirAll(filepath.Dir(p.LogPath), 0o755); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.starts++
	fmt.Fprintf(logf, "=== harness: start #%d of %s at %s: %s %s\n", p.starts, p.Name,
		time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== harness: %s (pid %d) exited at %s: %v\n", p.Name, cmd.Process.Pid,
			time.Now().Format(time.RFC3339Nano), exitString(err))
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Running reports whether the process was started and has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// Pid is the process id of the last start (0 if never started).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited is closed when the last started process exits (nil if never started).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitErr is how the last started process ended (nil while running or after exit status 0).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Signal sends sig to the running process (not its group).
func (p *Process) Signal(sig syscall.Signal) error {
	cmd, done := p.current()
	if cmd == nil || isClosed(done) {
		return fmt.Errorf("%s is not running", p.Name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Stop sends SIGTERM, waits up to grace (DefaultStopGrace if 0) and then sends SIGKILL. It
// returns nil if the process is not running or exited on SIGTERM with status 0 or by the
// signal; otherwise the exit error.
func (p *Process) Stop(grace time.Duration) error {
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	cmd, done := p.current()
	if cmd == nil || isClosed(done) {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", p.Name, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return p.cleanExit(syscall.SIGTERM)
	case <-timer.C:
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("stop %s: still running %s after SIGTERM; killed", p.Name, grace)
	}
}

// Kill sends SIGKILL (a crash) and waits for the exit.
func (p *Process) Kill() error {
	cmd, done := p.current()
	if cmd == nil || isClosed(done) {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-done
	return nil
}

// Restart stops the process (see Stop) and starts it again.
func (p *Process) Restart(grace time.Duration) error {
	if err := p.Stop(grace); err != nil {
		return err
	}
	return p.Start()
}

// KillGroup SIGKILLs the process's whole process group (what it started and did not move to
// a group of its own) and waits for the process itself.
func (p *Process) KillGroup() {
	cmd, done := p.current()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

func (p *Process) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

func (p *Process) cleanExit(sig syscall.Signal) error {
	err := p.ExitErr()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == sig {
			return nil
		}
	}
	return fmt.Errorf("%s exited badly: %w", p.Name, err)
}

// Log returns the process's log file content (every start).
func (p *Process) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Tail returns the last n bytes of the log.
func (p *Process) Tail(n int) string { return tailFile(p.LogPath, n) }

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := fi.Size() - int64(n)
	prefix := ""
	if off > 0 {
		prefix = fmt.Sprintf("... (%d bytes cut)\n", off)
	} else {
		off = 0
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return prefix + string(b)
}

// HostProcess is a process found by ProcessesUnder.
type HostProcess struct {
	Pid int
	// Exe is the executable's path.
	Exe string
}

// ProcessesUnder lists the processes whose executable lies under dir (for example the host
// services an agent started from its state directory), sorted by pid. It never lists the
// calling process.
func ProcessesUnder(dir string) []HostProcess {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []HostProcess
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		if strings.HasPrefix(exe, prefix) {
			out = append(out, HostProcess{Pid: pid, Exe: exe})
		}
	}
	return out
}

// KillUnder SIGKILLs every process whose executable lies under dir (see ProcessesUnder) and
// returns their pids.
func KillUnder(dir string) []int {
	var killed []int
	for _, p := range ProcessesUnder(dir) {
		if syscall.Kill(p.Pid, syscall.SIGKILL) == nil {
			killed = append(killed, p.Pid)
		}
	}
	return killed
}
