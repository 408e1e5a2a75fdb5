package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/go-logr/logr"
	"github.com/godbus/dbus/v5"
)

// Defaults of SystemdConfig.
const (
	DefaultUnitTemplate  = "rollkeeper-%s.service"
	DefaultSystemdSocket = "/run/systemd/private"
	// DefaultSystemBusSocket is the system bus's socket, for SystemdConfig.ViaBus.
	DefaultSystemBusSocket = "/run/dbus/system_bus_socket"
)

var (
	// ErrUnitNotFound means systemd has no unit for the service: the admin must install one.
	ErrUnitNotFound = errors.New("systemd unit not found")
	// ErrSystemdUnreachable means the agent cannot talk to systemd over D-Bus.
	ErrSystemdUnreachable = errors.New("systemd unreachable over D-Bus")
	// ErrUnsupported means the spec asks for something the backend's mode cannot do.
	ErrUnsupported = errors.New("not supported by the systemd backend with the admin's units")
)

// statusTimeout bounds one Status query: Status has no ctx, and a hung systemd must not hang
// the agent's worker.
const statusTimeout = 10 * time.Second

// SystemdConfig configures a Systemd backend.
type SystemdConfig struct {
	// UnitTemplate names a service's unit: %s is the service name. Default DefaultUnitTemplate.
	UnitTemplate string
	// Socket is the D-Bus socket to reach systemd on. Default: systemd's private socket
	// (DefaultSystemdSocket), which needs no dbus-daemon but only serves root peers in
	// systemd's PID namespace (the agent's pod needs hostPID); with ViaBus the system bus's.
	Socket string
	// ViaBus says Socket is a bus daemon's (dbus-daemon), which expects a Hello and relays
	// to systemd; systemd's private socket talks to the manager directly.
	ViaBus bool
	// CurrentLink returns the stable path of a service's running version (the store's current
	// link). Status reads the version from it for services this backend did not start itself
	// (after an agent restart). Optional.
	CurrentLink func(svc string) string
	// ManageUnits makes Start run each service as a transient unit built from its Spec, so no
	// unit file needs installing. Off: the units are the admin's.
	ManageUnits bool
	Log         logr.Logger
}

// Systemd runs host services as systemd units, over D-Bus. By default the units are the
// admin's: one per service, named by UnitTemplate, whose ExecStart runs the service from the
// agent-managed current link (<state-dir>/store/<svc>/current/...). The agent stops the unit,
// switches the link and starts the unit again; systemd supervises the process (restarts,
// logs, limits) as configured in the unit.
type Systemd struct {
	cfg SystemdConfig

	mu sync.Mutex
	// conn is the connection to systemd, nil until first use or after it dropped.
	conn *sdbus.Conn
	// lost is closed when conn's underlying connections close (systemd restarted, socket gone).
	lost <-chan struct{}
	// closeConn ends conn and the contexts bound to it.
	closeConn context.CancelFunc
	// started remembers what Start launched: the version and, for Status, where it runs from.
	started map[string]Spec
	// statusErr is the last error Status met per service, logged on change only (the agent
	// asks for status on every step).
	statusErr map[string]string
}

// NewSystemd returns a systemd backend. It does not connect yet: systemd may come up after
// the agent, and every call (re)connects as needed.
func NewSystemd(cfg SystemdConfig) *Systemd {
	if cfg.UnitTemplate == "" {
		cfg.UnitTemplate = DefaultUnitTemplate
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSystemdSocket
		if cfg.ViaBus {
			cfg.Socket = DefaultSystemBusSocket
		}
	}
	return &Systemd{cfg: cfg, started: map[string]Spec{}, statusErr: map[string]string{}}
}

// Unit is the unit name of svc.
func (s *Systemd) Unit(svc string) string {
	if strings.Contains(s.cfg.UnitTemplate, "%s") {
		return fmt.Sprintf(s.cfg.UnitTemplate, svc)
	}
	return s.cfg.UnitTemplate
}

// connect returns the live connection, dialing a new one when there is none or the old one
// dropped.
func (s *Systemd) connect(ctx context.Context) (*sdbus.Conn, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		select {
		case <-s.lost:
			s.cfg.Log.Info("D-Bus connection to systemd dropped; reconnecting", "socket", s.cfg.Socket)
			s.closeConn()
			s.conn = nil
		default:
			return s.conn, s.lost, nil
		}
	}
	// The godbus connections live as long as this context: it must outlive ctx, which only
	// bounds the dial (and the authentication that could hang on a stuck peer).
	connCtx, cancel := context.WithCancel(context.Background())
	stopDial := context.AfterFunc(ctx, cancel)
	defer stopDial()
	var dialed []*dbus.Conn
	conn, err := sdbus.NewConnection(func() (*dbus.Conn, error) {
		c, err := s.dial(connCtx)
		if err == nil {
			dialed = append(dialed, c)
		}
		return c, err
	})
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, nil, fmt.Errorf("%w: socket %s: %w", ErrSystemdUnreachable, s.cfg.Socket, err)
	}
	lost := make(chan struct{})
	// go-systemd uses one connection for calls and one for job signals; either closing makes
	// the pair useless. The watcher ends with connCtx, which closeConn cancels.
	go func() {
		select {
		case <-dialed[0].Context().Done():
		case <-dialed[1].Context().Done():
		}
		close(lost)
	}()
	s.conn, s.lost = conn, lost
	s.closeConn = func() { conn.Close(); cancel() }
	return conn, lost, nil
}

// dial opens one authenticated connection to Socket.
func (s *Systemd) dial(ctx context.Context) (*dbus.Conn, error) {
	c, err := dbus.Dial("unix:path="+s.cfg.Socket, dbus.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	// EXTERNAL with the numeric uid, as go-systemd does: no user lookup needed.
	if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		c.Close()
		return nil, err
	}
	if s.cfg.ViaBus {
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// drop forgets conn after a call failed on it, so the next call dials afresh.
func (s *Systemd) drop(conn *sdbus.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == conn && !conn.Connected() {
		s.closeConn()
		s.conn = nil
	}
}

// Close ends the D-Bus connection. The units keep running: systemd, not the agent, owns them.
func (s *Systemd) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.closeConn()
		s.conn = nil
	}
}

// unitState is what Start, Stop and Status read of a unit.
type unitState struct {
	LoadState, LoadError  string
	ActiveState, SubState string
	Result                string
	MainPID, NRestarts    uint32
	ExecMainCode          int32
	ExecMainStatus        int32
	ExecMainExitTimestamp uint64
	ExecStart             [][]string // argv of each ExecStart line
}

// running says whether the unit has (or is about to have, between crash and auto-restart)
// a process: a service systemd keeps restarting is supervised, as with the exec backend.
func (u unitState) running() bool {
	switch u.ActiveState {
	case "active", "activating", "reloading", "deactivating", "refreshing":
		return true
	}
	return false
}

func (u unitState) String() string {
	s := fmt.Sprintf("ActiveState=%s SubState=%s Result=%s", u.ActiveState, u.SubState, u.Result)
	if u.ExecMainExitTimestamp != 0 {
		s += " (main process " + u.exit() + ")"
	}
	return s
}

// exit describes how the main process last ended.
func (u unitState) exit() string {
	switch u.ExecMainCode {
	case 1: // CLD_EXITED
		return fmt.Sprintf("exited with status %d", u.ExecMainStatus)
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		return fmt.Sprintf("killed by signal %d", u.ExecMainStatus)
	}
	return fmt.Sprintf("ended (code %d, status %d)", u.ExecMainCode, u.ExecMainStatus)
}

// state reads unit's state. A connection that dropped is dialed again once.
func (s *Systemd) state(ctx context.Context, unit string) (unitState, *sdbus.Conn, <-chan struct{}, error) {
	for attempt := 0; ; attempt++ {
		conn, lost, err := s.connect(ctx)
		if err != nil {
			return unitState{}, nil, nil, err
		}
		st, err := readState(ctx, conn, unit)
		if err != nil && !conn.Connected() && attempt == 0 && ctx.Err() == nil {
			s.drop(conn)
			continue
		}
		if err != nil {
			s.drop(conn)
			if !conn.Connected() {
				err = fmt.Errorf("%w: socket %s: %w", ErrSystemdUnreachable, s.cfg.Socket, err)
			}
			return unitState{}, nil, nil, fmt.Errorf("read unit %s: %w", unit, err)
		}
		return st, conn, lost, nil
	}
}

func readState(ctx context.Context, conn *sdbus.Conn, unit string) (unitState, error) {
	// Asking for a unit's properties loads it, so a missing unit reads as LoadState=not-found.
	up, err := conn.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return unitState{}, err
	}
	var u unitState
	u.LoadState, _ = up["LoadState"].(string)
	u.ActiveState, _ = up["ActiveState"].(string)
	u.SubState, _ = up["SubState"].(string)
	if le, ok := up["LoadError"].([]any); ok && len(le) == 2 {
		u.LoadError = fmt.Sprint(le[1])
	}
	if u.LoadState != "loaded" {
		return u, nil
	}
	sp, err := conn.GetUnitTypePropertiesContext(ctx, unit, "Service")
	if err != nil {
		return unitState{}, err
	}
	u.Result, _ = sp["Result"].(string)
	u.MainPID, _ = sp["MainPID"].(uint32)
	u.NRestarts, _ = sp["NRestarts"].(uint32)
	u.ExecMainCode, _ = sp["ExecMainCode"].(int32)
	u.ExecMainStatus, _ = sp["ExecMainStatus"].(int32)
	u.ExecMainExitTimestamp, _ = sp["ExecMainExitTimestamp"].(uint64)
	// ExecStart is a(sasbttttuii): path, argv, ignore-failure, then timestamps and status.
	if es, ok := sp["ExecStart"].([][]any); ok {
		for _, e := range es {
			if len(e) > 1 {
				if argv, ok := e[1].([]string); ok {
					u.ExecStart = append(u.ExecStart, argv)
				}
			}
		}
	}
	return u, nil
}

// expectedExecStart is the command line a unit for spec should run.
func expectedExecStart(spec Spec) string {
	return strings.Join(append(append([]string{}, spec.Command...), spec.Args...), " ")
}

// Start implements Backend: it starts the service's unit and waits for systemd's start job.
func (s *Systemd) Start(ctx context.Context, svc string, spec Spec) error {
	unit := s.Unit(svc)
	if err := spec.ValidateCredentials(); err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	if s.cfg.ManageUnits {
		return s.startTransient(ctx, svc, unit, spec)
	}
	if spec.RunAsUser != nil {
		// The admin's unit decides its User= and Group=; running it as root when the release
		// asks for another user would be worse than not running it.
		return fmt.Errorf("start %s %s: %w: runAsUser/runAsGroup need the agent's transient units (--systemd-manage-units); set User= and Group= in unit %s instead",
			svc, spec.Version, ErrUnsupported, unit)
	}
	st, conn, lost, err := s.state(ctx, unit)
	if err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	switch st.LoadState {
	case "loaded":
	case "not-found":
		return fmt.Errorf("start %s %s: %w: %s; install it (then systemctl daemon-reload) with ExecStart=%s",
			svc, spec.Version, ErrUnitNotFound, unit, expectedExecStart(spec))
	default:
		return fmt.Errorf("start %s %s: unit %s is %s %s", svc, spec.Version, unit, st.LoadState, st.LoadError)
	}
	if st.running() {
		return fmt.Errorf("start %s %s: unit %s already running (%s)", svc, spec.Version, unit, st)
	}
	if spec.Dir != "" && !runsFrom(st.ExecStart, spec.Dir) {
		// Not fatal: a wrapper script may reach the link itself. But a unit that runs a fixed
		// path would make every rollout a restart of the same binary.
		s.cfg.Log.Info("unit's ExecStart does not mention the current link; upgrades only take effect if it runs the service from there",
			"unit", unit, "execStart", st.ExecStart, "currentLink", spec.Dir)
	}
	if st.ActiveState == "failed" {
		// A unit that failed (a crash of the previous version, a failed start) keeps counting
		// towards its start limit; the agent has its own backoff.
		if err := conn.ResetFailedUnitContext(ctx, unit); err != nil {
			return fmt.Errorf("start %s %s: reset failed unit %s: %w", svc, spec.Version, unit, err)
		}
	}
	return s.startJob(ctx, conn, lost, svc, unit, spec, func(done chan<- string) (int, error) {
		return conn.StartUnitContext(ctx, unit, "replace", done)
	})
}

// startJob submits a start job with submit, waits for its result and records what runs.
func (s *Systemd) startJob(ctx context.Context, conn *sdbus.Conn, lost <-chan struct{}, svc, unit string, spec Spec, submit func(done chan<- string) (int, error)) error {
	done := make(chan string, 1) // buffered: go-systemd's dispatcher must never block on it
	if _, err := submit(done); err != nil {
		s.drop(conn)
		return fmt.Errorf("start %s %s: start unit %s: %w", svc, spec.Version, unit, err)
	}
	if err := s.waitJob(ctx, conn, lost, unit, "start", done); err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	s.mu.Lock()
	s.started[svc] = spec
	s.mu.Unlock()
	return nil
}

// startTransient runs spec as a transient unit: systemd forgets it once it ends, and the
// agent needs no unit file. systemd still supervises it (restart on failure, stop timeout).
func (s *Systemd) startTransient(ctx context.Context, svc, unit string, spec Spec) error {
	if len(spec.Command) == 0 {
		return fmt.Errorf("start %s %s: empty command", svc, spec.Version)
	}
	st, conn, lost, err := s.state(ctx, unit)
	if err != nil {
		return fmt.Errorf("start %s %s: %w", svc, spec.Version, err)
	}
	if st.running() {
		return fmt.Errorf("start %s %s: unit %s already running (%s)", svc, spec.Version, unit, st)
	}
	grace := spec.StopGrace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	argv := append(append([]string{}, spec.Command...), spec.Args...)
	props := []sdbus.Property{
		sdbus.PropDescription(fmt.Sprintf("rollkeeper service %s %s", svc, spec.Version)),
		// exec: the start job fails when the binary cannot be executed, not only later.
		sdbus.PropType("exec"),
		sdbus.PropExecStart(argv, true),
		{Name: "Environment", Value: dbus.MakeVariant(spec.Env)},
		{Name: "TimeoutStopUSec", Value: dbus.MakeVariant(uint64(grace.Microseconds()))},
		{Name: "Restart", Value: dbus.MakeVariant("on-failure")},
		{Name: "RestartUSec", Value: dbus.MakeVariant(uint64(time.Second.Microseconds()))},
		// A failed transient unit would otherwise linger and block the next start by name.
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	if spec.Dir != "" {
		props = append(props, sdbus.Property{Name: "WorkingDirectory", Value: dbus.MakeVariant(spec.Dir)})
	}
	if spec.RunAsUser != nil && spec.RunAsGroup != nil {
		// Numeric: systemd takes them as ids, with no lookup in the host's user database.
		props = append(props,
			sdbus.Property{Name: "User", Value: dbus.MakeVariant(strconv.FormatUint(uint64(*spec.RunAsUser), 10))},
			sdbus.Property{Name: "Group", Value: dbus.MakeVariant(strconv.FormatUint(uint64(*spec.RunAsGroup), 10))})
	}
	return s.startJob(ctx, conn, lost, svc, unit, spec, func(done chan<- string) (int, error) {
		return conn.StartTransientUnitContext(ctx, unit, "replace", props, done)
	})
}

// runsFrom says whether any ExecStart argument lies under dir.
func runsFrom(execStart [][]string, dir string) bool {
	dir = filepath.Clean(dir)
	for _, argv := range execStart {
		for _, a := range argv {
			if a == dir || strings.HasPrefix(a, dir+"/") || strings.Contains(a, dir+"/") {
				return true
			}
		}
	}
	return false
}

// waitJob waits for the result of a job systemd accepted. Anything but "done" is an error
// carrying the unit's state, which says why (exit status, timeout, dependency).
func (s *Systemd) waitJob(ctx context.Context, conn *sdbus.Conn, lost <-chan struct{}, unit, what string, done <-chan string) error {
	var result string
	select {
	case result = <-done:
	case <-lost:
		s.drop(conn)
		return fmt.Errorf("%s unit %s: %w: connection lost while waiting for the job (socket %s)", what, unit, ErrSystemdUnreachable, s.cfg.Socket)
	case <-ctx.Done():
		// systemd carries on with the job; the caller decides what to do next.
		return fmt.Errorf("%s unit %s: waiting for the job: %w", what, unit, ctx.Err())
	}
	if result == "done" {
		return nil
	}
	st, _, _, err := s.state(ctx, unit)
	if err != nil {
		return fmt.Errorf("%s unit %s: job %s (state unknown: %v)", what, unit, result, err)
	}
	return fmt.Errorf("%s unit %s: job %s: %s", what, unit, result, st)
}

// Stop implements Backend: systemd stops the unit as the unit says (KillMode, TimeoutStopSec:
// SIGTERM, then SIGKILL) and the call returns when the job is over.
func (s *Systemd) Stop(ctx context.Context, svc string) error {
	unit := s.Unit(svc)
	st, conn, lost, err := s.state(ctx, unit)
	if err != nil {
		return fmt.Errorf("stop %s: %w", svc, err)
	}
	// A unit that does not exist (a transient one that ended, or none installed) runs nothing.
	if st.LoadState == "not-found" || !st.running() {
		return nil
	}
	done := make(chan string, 1)
	if _, err := conn.StopUnitContext(ctx, unit, "replace", done); err != nil {
		s.drop(conn)
		return fmt.Errorf("stop %s: stop unit %s: %w", svc, unit, err)
	}
	if err := s.waitJob(ctx, conn, lost, unit, "stop", done); err != nil {
		return fmt.Errorf("stop %s: %w", svc, err)
	}
	return nil
}

// Status implements Backend. When systemd cannot be asked, the service reads as not running
// (and Start then reports why); the error is logged when it changes.
func (s *Systemd) Status(svc string) Status {
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	unit := s.Unit(svc)
	st, _, _, err := s.state(ctx, unit)
	s.mu.Lock()
	spec, known := s.started[svc]
	if msg := fmt.Sprint(err); err != nil && s.statusErr[svc] != msg {
		s.cfg.Log.Error(err, "host service status unknown", "service", svc, "unit", unit)
		s.statusErr[svc] = msg
	} else if err == nil {
		delete(s.statusErr, svc)
	}
	s.mu.Unlock()
	if err != nil || st.LoadState != "loaded" {
		return Status{}
	}
	out := Status{Running: st.running(), Restarts: int(st.NRestarts)}
	if out.Running {
		out.PID = int(st.MainPID)
	}
	switch {
	case known:
		out.Version = spec.Version
	case s.cfg.CurrentLink != nil:
		// Started before this agent: the unit runs from the current link, and the agent only
		// switches the link while the unit is stopped, so the link names the running version.
		out.Version = linkVersion(s.cfg.CurrentLink(svc))
	}
	if st.Result != "" && st.Result != "success" {
		out.LastExit = st.Result
		if st.ExecMainExitTimestamp != 0 {
			out.LastExit += ": main process " + st.exit()
		}
	} else if st.NRestarts > 0 {
		// systemd forgets how the main process ended once it restarted it.
		out.LastExit = fmt.Sprintf("main process ended unexpectedly; systemd restarted it (%d restarts)", st.NRestarts)
	}
	return out
}

// linkVersion is the version a current link points at ("" if it is not a link).
func linkVersion(link string) string {
	t, err := os.Readlink(link)
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}
