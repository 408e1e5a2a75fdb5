// Package zkserver runs real ZooKeeper servers (Debian's zookeeper package) on free loopback
// ports in temporary directories, for tests and the demo (through internal/localstack). It never
// mocks anything. test/zkserver forwards it for the tests.
package zkserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ClassPath is Debian's server jar (its manifest names every dependency) and one SLF4J
// binding. A "/usr/share/java/*" wildcard would also load every other binding installed there,
// and which one wins depends on directory order: the NOP binding won on some machines, and a
// server that failed to start left an empty log.
const ClassPath = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"

// tlsClassPath adds what Debian's zookeeper.jar manifest leaves out and Netty's TLS server
// needs (its codec classes; the jar names netty-handler, which uses them).
const tlsClassPath = ":/usr/share/java/netty-codec.jar:/usr/share/java/netty-resolver.jar"

// startAttempts bounds how often Start picks new ports after a server could not bind one (a
// port found free can be taken by another process before the server binds it).
const startAttempts = 5

// Server is one ZooKeeper server process.
type Server struct {
	ID         int
	Dir        string
	ClientPort int
	// SecurePort serves TLS clients (Options.TLS), 0 without.
	SecurePort int
	cfgPath    string
	logPath    string
	cmd        *exec.Cmd
	exited     chan struct{}
	classPath  string
}

// Ensemble is one or more servers forming a cluster.
type Ensemble struct {
	Servers []*Server
}

// Start launches an ensemble of n servers (1 for a standalone server) under dir and waits until
// every server answers "imok" and a client session can be made.
func Start(ctx context.Context, dir string, n int) (*Ensemble, error) {
	return StartWith(ctx, dir, n, Options{})
}

// Options adjusts StartWith.
type Options struct {
	// TLS, if set, makes every server also serve TLS clients on its SecurePort (Netty, PEM
	// files, client certificates required); the plain client port stays, for the four-letter
	// words and the tests' own checks.
	TLS *TLS
}

// TLS names the servers' PEM files.
type TLS struct {
	// KeyStore holds the server's private key (PKCS#8) and certificate chain.
	KeyStore string
	// TrustStore holds the CA certificates client certificates must chain to.
	TrustStore string
}

// StartWith is Start with options.
func StartWith(ctx context.Context, dir string, n int, opts Options) (*Ensemble, error) {
	if _, err := os.Stat("/usr/share/java/zookeeper.jar"); err != nil {
		return nil, fmt.Errorf("zookeeper is not installed (run hack/install-deps.sh): %w", err)
	}
	for attempt := 1; ; attempt++ {
		e, err := start(ctx, dir, n, opts)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == startAttempts {
			return e, err
		}
		// Another process took a port between FreePorts and the server's bind: start over in
		// a clean directory with new ports.
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
}

// errPortTaken marks a server that exited because one of its ports was already bound.
var errPortTaken = errors.New("port already in use")

// freePorts is FreePorts; a test replaces it to hand out a port that is taken.
var freePorts = FreePorts

func start(ctx context.Context, dir string, n int, opts Options) (*Ensemble, error) {
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	var securePorts []int
	if opts.TLS != nil {
		if securePorts, err = freePorts(n); err != nil {
			return nil, err
		}
	}
	e := &Ensemble{}
	var peers []string
	for i := 1; i <= n; i++ {
		peers = append(peers, fmt.Sprintf("server.%d=127.0.0.1:%d:%d", i, ports[3*(i-1)+1], ports[3*(i-1)+2]))
	}
	for i := 1; i <= n; i++ {
		s := &Server{ID: i, Dir: filepath.Join(dir, fmt.Sprintf("zk%d", i)), ClientPort: ports[3*(i-1)], classPath: ClassPath}
		if err := os.MkdirAll(filepath.Join(s.Dir, "data"), 0o755); err != nil {
			return nil, err
		}
		cfg := []string{
			"tickTime=200",
			"initLimit=50",
			"syncLimit=25",
			// Sessions between 2 and 20 s, so tests can ask for short ones.
			"minSessionTimeout=1000",
			"maxSessionTimeout=20000",
			"dataDir=" + filepath.Join(s.Dir, "data"),
			"clientPortAddress=127.0.0.1",
			"clientPort=" + strconv.Itoa(s.ClientPort),
			"admin.enableServer=false",
			"4lw.commands.whitelist=ruok,stat,mntr,srvr,conf",
			"maxClientCnxns=0",
		}
		if opts.TLS != nil {
			s.SecurePort = securePorts[i-1]
			s.classPath += tlsClassPath
			// Keys ZooKeeper does not know become system properties "zookeeper.<key>".
			cfg = append(cfg,
				"secureClientPort="+strconv.Itoa(s.SecurePort),
				"secureClientPortAddress=127.0.0.1",
				"serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
				"ssl.keyStore.location="+opts.TLS.KeyStore, "ssl.keyStore.type=PEM",
				"ssl.trustStore.location="+opts.TLS.TrustStore, "ssl.trustStore.type=PEM",
				"ssl.clientAuth=need")
		}
		if n > 1 {
			cfg = append(cfg, peers...)
			if err := os.WriteFile(filepath.Join(s.Dir, "data", "myid"), []byte(strconv.Itoa(i)+"\n"), 0o644); err != nil {
				return nil, err
			}
		}
		s.cfgPath = filepath.Join(s.Dir, "zoo.cfg")
		s.logPath = filepath.Join(s.Dir, "server.log")
		if err := os.WriteFile(s.cfgPath, []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
		e.Servers = append(e.Servers, s)
	}
	for _, s := range e.Servers {
		if err := s.Start(); err != nil {
			e.Stop()
			return nil, err
		}
	}
	for _, s := range e.Servers {
		if err := s.WaitReady(ctx, 60*time.Second); err != nil {
			e.Stop()
			return nil, err
		}
	}
	return e, nil
}

// Connect is the client connect string of the whole ensemble.
func (e *Ensemble) Connect() string {
	var a []string
	for _, s := range e.Servers {
		a = append(a, s.Addr())
	}
	return strings.Join(a, ",")
}

// Stop kills every server.
func (e *Ensemble) Stop() {
	for _, s := range e.Servers {
		s.Stop()
	}
}

// SecureConnect is the TLS connect string of the whole ensemble (Options.TLS).
func (e *Ensemble) SecureConnect() string {
	var a []string
	for _, s := range e.Servers {
		a = append(a, fmt.Sprintf("127.0.0.1:%d", s.SecurePort))
	}
	return strings.Join(a, ",")
}

// Addr is the server's client address.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.ClientPort) }

// Start launches the server process (again, after Stop: the data directory is kept).
func (s *Server) Start() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=info", "-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
		"-cp", s.classPath, "org.apache.zookeeper.server.quorum.QuorumPeerMain", s.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with whoever started it, even on SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start zookeeper %d: %w", s.ID, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(s.exited) }()
	return nil
}

// Stop kills the server process and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// WaitReady polls until the server serves requests ("srvr" shows a mode) and is this server:
// "conf" shows its data directory. Whoever answers on the port is not necessarily this process.
func (s *Server) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := FourLetter(s.Addr(), "srvr")
		if err == nil && strings.Contains(out, "Mode: ") {
			conf, cerr := FourLetter(s.Addr(), "conf")
			if cerr == nil && s.isMe(conf) {
				return nil
			}
			if cerr == nil && strings.Contains(conf, "dataDir=") {
				return fmt.Errorf("zookeeper %d: port %d is served by another ZooKeeper (%s): %w",
					s.ID, s.ClientPort, confValue(conf, "dataDir"), errPortTaken)
			}
			err = cerr
		}
		select {
		case <-s.exited:
			log := tail(s.logPath)
			if strings.Contains(log, "Address already in use") {
				return fmt.Errorf("zookeeper %d exited during start: %w; log %s:\n%s", s.ID, errPortTaken, s.logPath, log)
			}
			return fmt.Errorf("zookeeper %d exited during start; log %s:\n%s", s.ID, s.logPath, log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper %d at %s not ready after %s (last: %v); log %s:\n%s", s.ID, s.Addr(), timeout, err, s.logPath, tail(s.logPath))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// isMe reports whether conf (the answer to "conf") comes from this server: its data directory
// is dataDir/version-2.
func (s *Server) isMe(conf string) bool {
	return filepath.Dir(confValue(conf, "dataDir")) == filepath.Join(s.Dir, "data")
}

// confValue is the value of key in an answer to "conf" ("" if absent).
func confValue(conf, key string) string {
	for _, line := range strings.Split(conf, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// FourLetter sends a four-letter-word command and returns the answer.
func FourLetter(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	if b.Len() == 0 {
		return "", errors.New("empty answer")
	}
	return b.String(), nil
}

func tail(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
