package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// ownerEnv marks the processes an Exec backend started, so a restarted agent can find and
// reap the ones a crashed predecessor left behind without touching unrelated processes.
const ownerEnv = "ROLLKEEPER_BACKEND_OWNER"

// Exec supervises host services as child processes: each runs in its own process group, logs
// to <dir>/<svc>/service.log, is restarted with backoff when it crashes, and dies with the agent
// (a machine whose agent is gone is a machine that is down).
type Exec struct {
	dir string
	log logr.Logger

	mu    sync.Mutex
	procs map[string]*proc
}

type proc struct {
	spec     Spec
	stop     chan struct{} // closed by Stop
	done     chan struct{} // closed when the supervisor returns
	pid      int
	running  bool
	restarts int
	lastExit string
}

// NewExec returns an exec backend keeping logs and pid files under dir. It first kills any
// service process a previous agent on this dir left running.
func NewExec(dir string, log logr.Logger) (*Exec, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("exec backend %s: %w", dir, err)
	}
	e := &Exec{dir: dir, log: log, procs: map[string]*proc{}}
	e.reapStale()
	return e, nil
}

func (e *Exec) pidFile(svc string) string { return filepath.Join(e.dir, svc, "service.pid") }

// LogFile is where svc's output goes.
func (e *Exec) LogFile(svc string) string { return filepath.Join(e.dir, svc, "service.log") }

func (e *Exec) reapStale() {
	files, _ := filepath.Glob(filepath.Join(e.dir, "*", "service.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
		if err != nil || pid <= 1 {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err == nil && bytes.Contains(env, []byte(ownerEnv+"="+e.dir+"\x00")) {
			e.log.Info("killing service process left by a previous agent", "pid", pid, "pidFile", f)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		_ = os.Remove(f)
	}
}

// Start implements Backend.
func (e *Exec) Start(ctx context.Context, svc string, spec Spec) error {
	if len(spec.Command) == 0 {
		return fmt.Errorf("start %s %s: empty command", svc, spec.Version)
	}
	e.mu.Lock()
	if p := e.procs[svc]; p != nil {
		select {
		case <-p.done:
		default:
			e.mu.Unlock()
			return fmt.Errorf("start %s %s: already running %s", svc, spec.Version, p.spec.Version)
		}
	}
	e.mu.Unlock()
	if err := os.MkdirAll(filepath.Join(e.dir, svc), 0o755); err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	p := &proc{spec: spec, stop: make(chan struct{}), done: make(chan struct{})}
	cmd, err := e.launch(svc, spec)
	if err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	p.pid, p.running = cmd.Process.Pid, true
	e.mu.Lock()
	e.procs[svc] = p
	e.mu.Unlock()
	go e.supervise(svc, p, cmd)
	return nil
}

func (e *Exec) launch(svc string, spec Spec) (*exec.Cmd, error) {
	logf, err := os.OpenFile(e.LogFile(svc), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s rollkeeper: starting %s %s: %v %v\n", time.Now().Format(time.RFC3339), svc, spec.Version, spec.Command, spec.Args)
	cmd := exec.Command(spec.Command[0], append(append([]string{}, spec.Command[1:]...), spec.Args...)...)
	cmd.Dir = spec.Dir
	cmd.Env = append(append(os.Environ(), spec.Env...), ownerEnv+"="+e.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	_ = os.WriteFile(e.pidFile(svc), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	return cmd, nil
}

// supervise waits for the process and restarts it with backoff until Stop.
func (e *Exec) supervise(svc string, p *proc, cmd *exec.Cmd) {
	defer close(p.done)
	backoff := 500 * time.Millisecond
	for {
		err := cmd.Wait()
		e.mu.Lock()
		p.running = false
		e.mu.Unlock()
		select {
		case <-p.stop:
			_ = os.Remove(e.pidFile(svc))
			return
		default:
		}
		e.mu.Lock()
		p.restarts++
		p.lastExit = fmt.Sprintf("exited unexpectedly: %v", err)
		e.mu.Unlock()
		e.log.Info("host service exited; restarting", "service", svc, "version", p.spec.Version, "err", fmt.Sprint(err), "backoff", backoff)
		select {
		case <-p.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
		next, lerr := e.launch(svc, p.spec)
		if lerr != nil {
			e.log.Error(lerr, "restart host service", "service", svc)
			e.mu.Lock()
			p.lastExit = "restart failed: " + lerr.Error()
			e.mu.Unlock()
			continue // try again after the next backoff; Wait on a failed cmd returns at once
		}
		cmd = next
		e.mu.Lock()
		p.pid, p.running = cmd.Process.Pid, true
		e.mu.Unlock()
	}
}

// Stop implements Backend: SIGTERM to the process group, SIGKILL after the grace period.
func (e *Exec) Stop(ctx context.Context, svc string) error {
	e.mu.Lock()
	p := e.procs[svc]
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	e.mu.Lock()
	pid, running := p.pid, p.running
	e.mu.Unlock()
	if running {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
	}
	grace := p.spec.StopGrace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	case <-ctx.Done():
	}
	e.log.Info("host service ignored SIGTERM; killing", "service", svc, "grace", grace)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("stop %s: process %d still running after SIGKILL", svc, pid)
	}
}

// Status implements Backend.
func (e *Exec) Status(svc string) Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.procs[svc]
	if p == nil {
		return Status{}
	}
	select {
	case <-p.stop:
		return Status{Version: p.spec.Version, Restarts: p.restarts, LastExit: p.lastExit}
	default:
	}
	// Between crash and restart the service is still "running" in the sense that it is
	// supervised; callers that need liveness use health checks.
	return Status{Running: true, Version: p.spec.Version, PID: p.pid, Restarts: p.restarts, LastExit: p.lastExit}
}

// Close stops every service (the node goes down with its agent).
func (e *Exec) Close(ctx context.Context) error {
	e.mu.Lock()
	var svcs []string
	for s := range e.procs {
		svcs = append(svcs, s)
	}
	e.mu.Unlock()
	var errs []error
	for _, s := range svcs {
		errs = append(errs, e.Stop(ctx, s))
	}
	return errors.Join(errs...)
}
