package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/nodeagent/hostenv"
)

// ownerEnv marks the processes an Exec backend started (its value is the backend's directory),
// so a restarted agent adopts its own services and never signals an unrelated process.
const ownerEnv = "ROLLKEEPER_BACKEND_OWNER"

// pollInterval is how often a service's process is checked for exit. A service may not be the
// agent's child (it outlives agents and is adopted by the next one), so its exit cannot always
// be waited for.
const pollInterval = 100 * time.Millisecond

// ExecConfig configures an Exec backend.
type ExecConfig struct {
	// Dir holds each service's log and state file (<Dir>/<svc>/service.log, service.pid).
	Dir string
	// LeaveCgroup moves every service, once started, from the agent's cgroups into those of the
	// host's PID 1. A container runtime kills every process in a container's cgroups when the
	// container ends (runc with a shared PID namespace, the kubelet when it removes a pod), so
	// an agent in a pod needs it for its services to outlive the pod.
	LeaveCgroup bool
	Log         logr.Logger
}

// Exec runs host services as detached processes: each runs in its own session (no controlling
// terminal, its own process group), logs to <dir>/<svc>/service.log, and is restarted with
// backoff when it crashes. A service outlives the agent that started it: its pid, start time and
// spec are recorded in <dir>/<svc>/service.pid, and the next Exec on the same dir adopts it (it
// supervises it without being its parent). A recorded pid is only ever signalled while its
// process start time still matches the record, so a reused pid is never touched.
type Exec struct {
	cfg ExecConfig
	log logr.Logger

	// quit ends supervision (Close) without stopping the services.
	quit     chan struct{}
	quitOnce sync.Once
	wg       sync.WaitGroup

	mu    sync.Mutex
	procs map[string]*proc
}

type proc struct {
	spec     Spec
	stop     chan struct{} // closed by Stop
	done     chan struct{} // closed when the supervisor returns
	pid      int
	start    uint64 // the process's start time, /proc/<pid>/stat field 22
	running  bool
	restarts int
	lastExit string
}

// execRecord is a service's state file: what identifies its process and how to start it again.
type execRecord struct {
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks after boot): with the pid, it
	// identifies the process across pid reuse.
	StartTime uint64 `json:"startTime"`
	// BootID is the machine's boot the process runs in (start times restart at each boot).
	BootID  string `json:"bootID"`
	Version string `json:"version"`
	Spec    Spec   `json:"spec"`
}

// NewExec returns an exec backend keeping logs and state under dir.
func NewExec(dir string, log logr.Logger) (*Exec, error) {
	return NewExecConfig(ExecConfig{Dir: dir, Log: log})
}

// NewExecConfig returns an exec backend. It adopts the services a previous agent on the same
// dir left running, and forgets the records of those that are gone.
func NewExecConfig(cfg ExecConfig) (*Exec, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("exec backend %s: %w", cfg.Dir, err)
	}
	e := &Exec{cfg: cfg, log: cfg.Log, quit: make(chan struct{}), procs: map[string]*proc{}}
	e.adopt()
	return e, nil
}

func (e *Exec) pidFile(svc string) string { return filepath.Join(e.cfg.Dir, svc, "service.pid") }

// LogFile is where svc's output goes.
func (e *Exec) LogFile(svc string) string { return filepath.Join(e.cfg.Dir, svc, "service.log") }

// adopt takes over the services recorded under the dir whose processes still run.
func (e *Exec) adopt() {
	files, _ := filepath.Glob(filepath.Join(e.cfg.Dir, "*", "service.pid"))
	for _, f := range files {
		svc := filepath.Base(filepath.Dir(f))
		rec, err := readRecord(f)
		if err != nil {
			// A record of an older agent (a bare pid) or a torn write: its process, if any,
			// cannot be told from a reused pid, so it is left alone.
			e.log.Info("ignoring unreadable service record", "service", svc, "file", f, "err", err.Error())
			_ = os.Remove(f)
			continue
		}
		if !e.owns(rec) {
			e.log.Info("service left by a previous agent is gone", "service", svc, "version", rec.Version, "pid", rec.PID)
			_ = os.Remove(f)
			continue
		}
		p := &proc{spec: rec.Spec, stop: make(chan struct{}), done: make(chan struct{}),
			pid: rec.PID, start: rec.StartTime, running: true}
		e.log.Info("adopted host service left running by a previous agent", "service", svc, "version", rec.Version, "pid", rec.PID)
		e.procs[svc] = p
		e.wg.Add(1)
		go e.supervise(svc, p, nil)
	}
}

func readRecord(path string) (execRecord, error) {
	var rec execRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, err
	}
	if rec.PID <= 1 || rec.StartTime == 0 || len(rec.Spec.Command) == 0 {
		return rec, errors.New("incomplete record")
	}
	return rec, nil
}

// procStat reads a process's state letter and start time from /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 { // fields 3..22
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return f[0][0], start, nil
}

// alive says whether pid is still the process that started at start and has not exited (a
// zombie has exited: only its parent's wait is missing).
func alive(pid int, start uint64) bool {
	state, st, err := procStat(pid)
	return err == nil && st == start && state != 'Z' && state != 'X'
}

// owns says whether pid is a live process this backend's dir started, at start, in this boot.
// Pid, start time and boot identify a process; the owner marker in its environment guards
// against a record copied from elsewhere. A process in the middle of an exec shows an empty
// environment for an instant: that is not taken for a stranger.
func (e *Exec) owns(rec execRecord) bool {
	if rec.BootID != bootID() || !alive(rec.PID, rec.StartTime) {
		return false
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(rec.PID) + "/environ")
	if err != nil {
		return false
	}
	return (len(env) == 0 || bytes.Contains(env, []byte(ownerEnv+"="+e.cfg.Dir+"\x00"))) && alive(rec.PID, rec.StartTime)
}

// bootID identifies this boot of the machine: a start time only means something within one.
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return string(bytes.TrimSpace(b))
}

// Start implements Backend.
func (e *Exec) Start(ctx context.Context, svc string, spec Spec) error {
	if len(spec.Command) == 0 {
		return fmt.Errorf("start %s %s: empty command", svc, spec.Version)
	}
	if err := spec.ValidateCredentials(); err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
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
	if err := os.MkdirAll(filepath.Join(e.cfg.Dir, svc), 0o755); err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	p := &proc{spec: spec, stop: make(chan struct{}), done: make(chan struct{})}
	cmd, start, err := e.launch(svc, spec)
	if err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	p.pid, p.start, p.running = cmd.Process.Pid, start, true
	e.mu.Lock()
	e.procs[svc] = p
	e.mu.Unlock()
	e.wg.Add(1)
	go e.supervise(svc, p, cmd)
	return nil
}

// launch starts one process of svc, detached from the agent, and records it.
func (e *Exec) launch(svc string, spec Spec) (*exec.Cmd, uint64, error) {
	logf, err := os.OpenFile(e.LogFile(svc), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, 0, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s rollkeeper: starting %s %s: %v %v\n", time.Now().Format(time.RFC3339), svc, spec.Version, spec.Command, spec.Args)
	cmd := exec.Command(spec.Command[0], append(append([]string{}, spec.Command[1:]...), spec.Args...)...)
	cmd.Dir = spec.Dir
	// Not the agent's environment (it holds the agent's secrets): the allowlist, and the owner
	// marker last so that no release can override it.
	cmd.Env = hostenv.Build(append(slices.Clone(spec.Env), ownerEnv+"="+e.cfg.Dir)...)
	// Files, not pipes: the agent's death must not leave the service writing to a closed pipe.
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: no signal aimed at the agent's process group or terminal reaches it, and
	// no parent-death signal, so it outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if spec.RunAsUser != nil && spec.RunAsGroup != nil {
		// Supplementary groups are replaced by the one group: the agent's (root's) must not
		// stay with the service.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: *spec.RunAsUser, Gid: *spec.RunAsGroup,
			Groups: []uint32{*spec.RunAsGroup}}
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	pid := cmd.Process.Pid
	// The child cannot be reaped before Wait, so its stat is readable even if it already exited.
	_, start, err := procStat(pid)
	if err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
		return nil, 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	if e.cfg.LeaveCgroup {
		if err := leaveCgroups(e.cfg.Dir, pid); err != nil {
			// It runs, but dies with the agent's container: say so, do not fail the start.
			e.log.Error(err, "host service stays in the agent's cgroups; it will not outlive the agent's container", "service", svc, "pid", pid)
		}
	}
	if err := writeRecord(e.pidFile(svc), execRecord{PID: pid, StartTime: start, BootID: bootID(), Version: spec.Version, Spec: spec}); err != nil {
		// Without a record the next agent could not adopt it and would start a second copy.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
		return nil, 0, fmt.Errorf("record pid %d: %w", pid, err)
	}
	return cmd, start, nil
}

// writeRecord replaces path atomically. It holds the service's environment: owner-only.
func writeRecord(path string, rec execRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// wait returns when p's current process has exited (with how it ended) or, with quit set, when
// the backend is closed. cmd is the process when this agent started it (then it is reaped for
// its exit status), nil when adopted.
func (e *Exec) wait(p *proc, cmd *exec.Cmd) (exit string, quit bool) {
	e.mu.Lock()
	pid, start := p.pid, p.start
	e.mu.Unlock()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for alive(pid, start) {
		select {
		case <-e.quit:
			return "", true
		case <-t.C:
		}
	}
	if cmd == nil {
		return "exited (adopted: its exit status went to its parent)", false
	}
	return fmt.Sprintf("exited unexpectedly: %v", cmd.Wait()), false
}

// supervise watches the process and restarts it with backoff until Stop; Close ends it and
// leaves the process running.
func (e *Exec) supervise(svc string, p *proc, cmd *exec.Cmd) {
	defer e.wg.Done()
	defer close(p.done)
	backoff := 500 * time.Millisecond
	failed := "" // why the last relaunch failed: there is no process to wait for
	for {
		exit := failed
		if failed == "" {
			var quit bool
			if exit, quit = e.wait(p, cmd); quit {
				return
			}
		}
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
		p.lastExit = exit
		e.mu.Unlock()
		e.log.Info("host service exited; restarting", "service", svc, "version", p.spec.Version, "exit", exit, "backoff", backoff)
		select {
		case <-p.stop:
			_ = os.Remove(e.pidFile(svc))
			return
		case <-e.quit:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
		next, start, lerr := e.launch(svc, p.spec)
		if lerr != nil {
			e.log.Error(lerr, "restart host service", "service", svc)
			failed = "restart failed: " + lerr.Error()
			continue
		}
		cmd, failed = next, ""
		e.mu.Lock()
		p.pid, p.start, p.running = next.Process.Pid, start, true
		e.mu.Unlock()
	}
}

// signal sends sig to the process group of p's process, only if that process is still the one
// recorded (same start time) and has not exited: a reused pid is never signalled.
func signal(pid int, start uint64, sig syscall.Signal) {
	if alive(pid, start) {
		_ = syscall.Kill(-pid, sig)
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
	pid, start := p.pid, p.start
	e.mu.Unlock()
	signal(pid, start, syscall.SIGTERM)
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
	signal(pid, start, syscall.SIGKILL)
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

// Close stops supervising and returns once every supervisor has: the services keep running,
// for the next agent on the same dir to adopt. A restart caught between crash and relaunch
// is left to that agent (it finds the record of a dead process and starts the service).
func (e *Exec) Close() {
	e.quitOnce.Do(func() { close(e.quit) })
	e.wg.Wait()
}

// StopAll stops every service this backend supervises (the node's host services go down).
func (e *Exec) StopAll(ctx context.Context) error {
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
