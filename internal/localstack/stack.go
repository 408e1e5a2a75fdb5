package localstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/internal/localstack/zkserver"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// KeepDirEnv, when set to 1, keeps a stack's directory (logs, state dirs) after Stop.
const KeepDirEnv = "ROLLKEEPER_KEEP_TEST_DIR"

// Config says what Start brings up. The zero value is a full stack of 5 nodes.
type Config struct {
	// Nodes is the number of simulated nodes node-1..node-N (default 5; -1 for none).
	Nodes int
	// NodeLabels gives extra labels of node i (1-based); every node also gets
	// kubernetes.io/hostname=<name> and rollkeeper.io/node=true.
	NodeLabels func(i int) map[string]string
	// ZooKeeperServers is the ensemble size (default 1).
	ZooKeeperServers int
	// ZKRoot is the ZooKeeper root of rollkeeper (default /rollkeeper).
	ZKRoot string
	// ZKAuth is the digest "user:password" the operator, the agents and Stack.ZK use (default:
	// generated for the stack, as a real install has; given to them in a file, --zk-auth-file).
	ZKAuth string
	// ZooKeeperTLS makes the operator and the agents talk to ZooKeeper over TLS (its
	// secureClientPort, client certificates required), with a PKI generated for the stack. The
	// test's own sessions (Stack.ZK, the recorder) use the plain port.
	ZooKeeperTLS bool
	// OpenZooKeeper runs the operator and the agents without credentials
	// (--insecure-allow-open-zookeeper): world-open znodes. ZKAuth must be empty.
	OpenZooKeeper bool
	// UnsignedPlans runs the operator and the agents without signatures
	// (--insecure-allow-unsigned-plans). By default the stack generates the operator's ed25519
	// key (--signing-key-file) and gives the agents its public key (--trusted-keys-file).
	UnsignedPlans bool
	// ZKSessionTimeout is passed to the operator and agents (default 4s, so a killed agent's
	// ephemeral znodes vanish quickly).
	ZKSessionTimeout time.Duration
	// SkipOperator does not start the operator process (StartOperator can do it later).
	SkipOperator bool
	// SkipAgents creates the Node objects but starts no agent process (Node.Start can).
	SkipAgents bool
	// RecordServices are the services the Recorder watches from the start (more can be added
	// with Recorder.Watch).
	RecordServices []string
	// AgentZKServers, when set, gives node i (1-based) its own ZooKeeper connect string, made
	// from the ensemble's (servers), for example through a proxy the test can cut. Empty
	// means servers.
	AgentZKServers func(i int, servers string) string
	// ManagerArgs and AgentArgs are appended to the processes' command lines.
	ManagerArgs []string
	AgentArgs   []string
	// AgentMetrics serves each agent's /metrics on a free port of its address
	// (Node.MetricsAddr); without it the agents run with --metrics-addr=0.
	AgentMetrics bool
	// Dir holds everything the stack writes (default: a new temporary directory, removed by
	// Stop unless ROLLKEEPER_KEEP_TEST_DIR=1).
	Dir string
	// Logf reports progress (default: log.Printf; test/harness.StartT uses t.Logf).
	Logf func(format string, args ...any)
}

// Stack is a running test stack. Its fields are read-only after Start.
type Stack struct {
	Config Config
	Dir    string
	// zkAuthFile holds Config.ZKAuth for the operator and the agents ("" when running open).
	zkAuthFile string
	// SigningKeyFile and TrustedKeysFile are the operator's private key and the agents'
	// trusted keys (PEM; "" with UnsignedPlans). A test may rewrite TrustedKeysFile: agents
	// read it again when it changes.
	SigningKeyFile, TrustedKeysFile string
	// zkTLS is the stack's PKI with Config.ZooKeeperTLS.
	zkTLS *zkserver.PKI
	Bins  Binaries

	ZooKeeper *zkserver.Ensemble
	// ZKServers is the ZooKeeper connect string.
	ZKServers string
	Layout    zklayout.Layout

	ControlPlane *ControlPlane
	// Client is the admin controller-runtime client.
	Client client.Client
	// Kubeconfig is the admin kubeconfig file.
	Kubeconfig string

	Artifacts *ArtifactServer
	Recorder  *Recorder
	Operator  *Process
	Nodes     []*Node

	removeDir bool
	logf      func(format string, args ...any)

	mu        sync.Mutex
	ports     map[string]int
	artifacts map[string]Artifact
	zk        *zkclient.Client
	stopped   bool
}

// Node is one simulated node: a Node object and an agent process with its own address and
// state directory.
type Node struct {
	Index    int
	Name     string
	Address  string
	Labels   map[string]string
	StateDir string
	Agent    *Process
	// MetricsAddr is host:port of the agent's /metrics (Config.AgentMetrics), or empty.
	MetricsAddr string
}

// NodeName is the name of node i (1-based).
func NodeName(i int) string { return fmt.Sprintf("node-%d", i) }

// NodeAddress is the loopback address of node i (1-based): 127.0.0.(i+1).
func NodeAddress(i int) string { return fmt.Sprintf("127.0.0.%d", i+1) }

// Start brings up the stack described by cfg. On error everything already started is stopped.
func Start(ctx context.Context, cfg Config) (s *Stack, err error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 5
	}
	if cfg.Nodes < 0 {
		cfg.Nodes = 0
	}
	if cfg.Nodes > 250 {
		return nil, fmt.Errorf("stack: %d nodes: at most 250 loopback addresses", cfg.Nodes)
	}
	if cfg.ZooKeeperServers <= 0 {
		cfg.ZooKeeperServers = 1
	}
	if cfg.ZKRoot == "" {
		cfg.ZKRoot = zklayout.DefaultRoot
	}
	if cfg.ZKSessionTimeout <= 0 {
		cfg.ZKSessionTimeout = 4 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = log.Printf
	}
	layout, err := zklayout.New(cfg.ZKRoot)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if cfg.OpenZooKeeper && cfg.ZKAuth != "" {
		return nil, errors.New("stack: OpenZooKeeper with ZKAuth")
	}
	if !cfg.OpenZooKeeper && cfg.ZKAuth == "" {
		// Secure by default, like a real install: rollkeeper's tree is locked to its identity.
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("stack: credentials: %w", err)
		}
		cfg.ZKAuth = "rollkeeper:" + hex.EncodeToString(b)
	}
	s = &Stack{Config: cfg, Layout: layout, logf: cfg.Logf, ports: map[string]int{}, artifacts: map[string]Artifact{}}
	s.Dir = cfg.Dir
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "rollkeeper-stack-"); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		s.removeDir = os.Getenv(KeepDirEnv) != "1"
	} else if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if cfg.ZKAuth != "" {
		s.zkAuthFile = filepath.Join(s.Dir, "zk-auth")
		if err := os.WriteFile(s.zkAuthFile, []byte(cfg.ZKAuth+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
	}
	if !cfg.UnsignedPlans {
		if s.SigningKeyFile, s.TrustedKeysFile, err = WriteSigningKey(s.Dir, "signing"); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
	}
	defer func() {
		if err != nil {
			s.Stop()
			s = nil
		}
	}()
	start := time.Now()

	// Build the binaries while ZooKeeper and the control plane start.
	names := []string{FixtureBinary}
	if !cfg.SkipOperator {
		names = append(names, ManagerBinary)
	}
	if !cfg.SkipAgents && cfg.Nodes > 0 {
		names = append(names, AgentBinary)
	}
	var (
		wg                     sync.WaitGroup
		bins                   map[string]string
		buildErr, zkErr, cpErr error
	)
	wg.Add(3)
	go func() {
		defer wg.Done()
		bins, buildErr = Build(ctx, names...)
	}()
	go func() {
		defer wg.Done()
		var opts zkserver.Options
		if cfg.ZooKeeperTLS {
			var pki zkserver.PKI
			if pki, zkErr = zkserver.WritePKI(filepath.Join(s.Dir, "zk-tls")); zkErr != nil {
				return
			}
			s.zkTLS, opts.TLS = &pki, pki.TLS()
		}
		s.ZooKeeper, zkErr = zkserver.StartWith(ctx, filepath.Join(s.Dir, "zookeeper"), cfg.ZooKeeperServers, opts)
	}()
	go func() {
		defer wg.Done()
		s.ControlPlane, cpErr = StartControlPlane(filepath.Join(s.Dir, "kube"))
	}()
	wg.Wait()
	if err := errors.Join(buildErr, zkErr, cpErr); err != nil {
		return s, fmt.Errorf("stack: %w", err)
	}
	s.Bins = Binaries{Manager: bins[ManagerBinary], Agent: bins[AgentBinary], Fixture: bins[FixtureBinary]}
	s.ZKServers = s.ZooKeeper.Connect()
	s.Client = s.ControlPlane.Client
	s.Kubeconfig = s.ControlPlane.Kubeconfig
	s.logf("stack: ZooKeeper %s and API server %s up in %s (dir %s)", s.ZKServers, s.ControlPlane.Config.Host, time.Since(start).Round(time.Millisecond), s.Dir)

	if s.Artifacts, err = NewArtifactServer(filepath.Join(s.Dir, "artifacts")); err != nil {
		return s, err
	}
	if s.Recorder, err = NewRecorder(ctx, s.ZKServers, s.Layout, cfg.RecordServices...); err != nil {
		return s, err
	}

	for i := 1; i <= cfg.Nodes; i++ {
		labels := map[string]string{"kubernetes.io/hostname": NodeName(i), "rollkeeper.io/node": "true"}
		if cfg.NodeLabels != nil {
			maps.Copy(labels, cfg.NodeLabels(i))
		}
		n := &Node{Index: i, Name: NodeName(i), Address: NodeAddress(i), Labels: labels,
			StateDir: filepath.Join(s.Dir, "nodes", NodeName(i))}
		if cfg.AgentMetrics {
			if n.MetricsAddr, err = freeAddr(n.Address); err != nil {
				return s, fmt.Errorf("stack: metrics port of %s: %w", n.Name, err)
			}
		}
		if err := s.Client.Create(ctx, NodeObject(n.Name, n.Address, labels)); err != nil {
			return s, fmt.Errorf("stack: create Node %s: %w", n.Name, err)
		}
		n.Agent = &Process{
			Name:    "agent " + n.Name,
			Path:    s.Bins.Agent,
			Args:    s.agentArgs(n),
			LogPath: filepath.Join(s.Dir, "logs", n.Name+".log"),
			Dir:     s.Dir,
		}
		if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
			return s, fmt.Errorf("stack: %w", err)
		}
		s.Nodes = append(s.Nodes, n)
	}
	if !cfg.SkipAgents {
		for _, n := range s.Nodes {
			if err := n.Start(); err != nil {
				return s, err
			}
		}
	}
	s.Operator = &Process{
		Name:    "operator",
		Path:    s.Bins.Manager,
		Args:    s.managerArgs(),
		LogPath: filepath.Join(s.Dir, "logs", "operator.log"),
		Dir:     s.Dir,
	}
	if !cfg.SkipOperator {
		if err := s.Operator.Start(); err != nil {
			return s, err
		}
	}
	s.logf("stack: up in %s: %d nodes, agents started: %t, operator started: %t", time.Since(start).Round(time.Millisecond),
		len(s.Nodes), !cfg.SkipAgents, !cfg.SkipOperator)
	return s, nil
}

func (s *Stack) agentArgs(n *Node) []string {
	keys := slices.Sorted(maps.Keys(n.Labels))
	var labels []string
	for _, k := range keys {
		labels = append(labels, k+"="+n.Labels[k])
	}
	zkServers := s.processZKServers()
	if s.Config.AgentZKServers != nil {
		if z := s.Config.AgentZKServers(n.Index, s.ZKServers); z != "" {
			zkServers = z
		}
	}
	args := []string{
		"--node-name=" + n.Name,
		"--node-address=" + n.Address,
		"--node-labels=" + strings.Join(labels, ","),
		"--state-dir=" + n.StateDir,
		"--zk-servers=" + zkServers,
		"--zk-root=" + s.Layout.Root(),
		"--zk-session-timeout=" + s.Config.ZKSessionTimeout.String(),
		"--kubeconfig=" + s.Kubeconfig,
		// Free ports: stacks of parallel test packages share the loopback addresses.
		"--p2p-port=0",
	}
	args = append(args, s.zkAuthArg())
	args = append(args, s.zkTLSArgs()...)
	if s.TrustedKeysFile == "" {
		args = append(args, "--insecure-allow-unsigned-plans")
	} else {
		args = append(args, "--trusted-keys-file="+s.TrustedKeysFile)
	}
	metrics := "0"
	if n.MetricsAddr != "" {
		metrics = n.MetricsAddr
	}
	args = append(args, "--metrics-addr="+metrics)
	return append(args, s.Config.AgentArgs...)
}

// freeAddr returns host:port with a port free on host right now.
func freeAddr(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// AgentArgs is node n's agent command line (Config.AgentArgs included), for a test that runs
// the agent itself.
func (s *Stack) AgentArgs(n *Node) []string { return s.agentArgs(n) }

// ManagerArgs is the operator's command line (Config.ManagerArgs included), for a test that
// runs more replicas of it.
func (s *Stack) ManagerArgs() []string { return s.managerArgs() }

func (s *Stack) managerArgs() []string {
	args := []string{
		"--zk-servers=" + s.processZKServers(),
		"--zk-root=" + s.Layout.Root(),
		"--zk-session-timeout=" + s.Config.ZKSessionTimeout.String(),
		"--kubeconfig=" + s.Kubeconfig,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=0",
		"--p2p-host=127.0.0.1",
		"--p2p-port=0",
		"--seeder-dir=" + filepath.Join(s.Dir, "seeder"),
		// The artifact server is on 127.0.0.1 and FileURL fixtures name its directory: the
		// seeder refuses both by default, so the stack opts in explicitly.
		"--seeder-allow-origin-cidrs=127.0.0.0/8",
		"--seeder-file-roots=" + filepath.Join(s.Dir, "artifacts"),
	}
	args = append(args, s.zkAuthArg())
	args = append(args, s.zkTLSArgs()...)
	if s.SigningKeyFile == "" {
		args = append(args, "--insecure-allow-unsigned-plans")
	} else {
		args = append(args, "--signing-key-file="+s.SigningKeyFile)
	}
	return append(args, s.Config.ManagerArgs...)
}

// processZKServers is the connect string of the operator and the agents: the TLS ports with
// Config.ZooKeeperTLS.
func (s *Stack) processZKServers() string {
	if s.zkTLS != nil {
		return s.ZooKeeper.SecureConnect()
	}
	return s.ZKServers
}

// zkTLSArgs gives the operator and the agents the stack's client certificate (ZooKeeperTLS).
func (s *Stack) zkTLSArgs() []string {
	if s.zkTLS == nil {
		return nil
	}
	return []string{"--zk-tls-ca-file=" + s.zkTLS.CA, "--zk-tls-cert-file=" + s.zkTLS.ClientCert,
		"--zk-tls-key-file=" + s.zkTLS.ClientKey, "--zk-tls-server-name=" + s.zkTLS.ServerName}
}

// zkAuthArg gives the operator and the agents the stack's credentials, or runs them open.
func (s *Stack) zkAuthArg() string {
	if s.zkAuthFile == "" {
		return "--insecure-allow-open-zookeeper"
	}
	return "--zk-auth-file=" + s.zkAuthFile
}

// Stop stops everything the stack started, in reverse order: operator, agents (and any host
// service they left running), recorder, artifact server, control plane, ZooKeeper. It is safe
// to call more than once.
func (s *Stack) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	zk := s.zk
	s.mu.Unlock()

	if s.Operator != nil {
		if err := s.Operator.Stop(10 * time.Second); err != nil {
			s.logf("stack: %v", err)
		}
	}
	var wg sync.WaitGroup
	for _, n := range s.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Agent.Stop(10 * time.Second); err != nil {
				s.logf("stack: %v", err)
			}
			n.Agent.KillGroup()
			if pids := KillUnder(n.StateDir); len(pids) > 0 {
				s.logf("stack: killed %d leftover host service process(es) of %s: %v", len(pids), n.Name, pids)
			}
		}()
	}
	wg.Wait()
	if zk != nil {
		zk.Close()
	}
	if s.Recorder != nil {
		s.Recorder.Stop()
	}
	if s.Artifacts != nil {
		if err := s.Artifacts.Close(); err != nil {
			s.logf("stack: %v", err)
		}
	}
	if err := s.ControlPlane.Stop(); err != nil {
		s.logf("stack: %v", err)
	}
	if s.ZooKeeper != nil {
		s.ZooKeeper.Stop()
	}
	if s.removeDir {
		_ = os.RemoveAll(s.Dir)
	} else {
		s.logf("stack: kept %s", s.Dir)
	}
}

// DumpLogs writes the last max bytes of every process log (operator, agents, host services
// under the state dirs, ZooKeeper) to w.
func (s *Stack) DumpLogs(w io.Writer, max int) {
	var paths []string
	if s.Operator != nil {
		paths = append(paths, s.Operator.LogPath)
	}
	for _, n := range s.Nodes {
		paths = append(paths, n.Agent.LogPath)
		// Host service logs the agent keeps in its state dir.
		_ = filepath.WalkDir(n.StateDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".log") {
				paths = append(paths, p)
			}
			return nil
		})
	}
	if s.ZooKeeper != nil {
		for _, z := range s.ZooKeeper.Servers {
			paths = append(paths, filepath.Join(z.Dir, "server.log"))
		}
	}
	for _, p := range paths {
		fmt.Fprintf(w, "\n===== %s =====\n%s\n", p, tailFile(p, max))
	}
	if s.Recorder != nil {
		svcs := map[string]bool{}
		s.Recorder.mu.Lock()
		for k := range s.Recorder.snapshots {
			svcs[k[strings.Index(k, "/")+1:]] = true
		}
		s.Recorder.mu.Unlock()
		for _, svc := range slices.Sorted(maps.Keys(svcs)) {
			fmt.Fprintf(w, "\n===== recorder: %s =====\n%s", svc, s.Recorder.Report(svc))
		}
	}
}

// StartOperator starts the operator process (again), building it first if Start skipped it.
func (s *Stack) StartOperator() error {
	if err := ensureBinary(s.Operator, ManagerBinary); err != nil {
		return err
	}
	return s.Operator.Start()
}

// ensureBinary builds the binary of p when Start skipped it (SkipOperator, SkipAgents).
func ensureBinary(p *Process, name string) error {
	if p.Path != "" {
		return nil
	}
	bins, err := Build(context.Background(), name)
	if err != nil {
		return err
	}
	p.Path = bins[name]
	return nil
}

// Node returns node i (1-based).
func (s *Stack) Node(i int) *Node { return s.Nodes[i-1] }

// NodeByName returns the node called name, or nil.
func (s *Stack) NodeByName(name string) *Node {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// ZK returns a ZooKeeper client shared by the test (closed by Stop).
func (s *Stack) ZK(ctx context.Context) (*zkclient.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.zk != nil {
		return s.zk, nil
	}
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(s.ZKServers), Auth: s.Config.ZKAuth, Logger: logr.Discard()})
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	s.zk = c
	return c, nil
}

// ServicePort returns the TCP port the fixture of service svc listens on, the same on every
// node's address; chosen free on first use.
func (s *Stack) ServicePort(svc string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.ports[svc]; ok {
		return p, nil
	}
	for attempt := 0; attempt < 20; attempt++ {
		ports, err := zkserver.FreePorts(1)
		if err != nil {
			return 0, err
		}
		p := ports[0]
		if slices.Contains(slices.Collect(maps.Values(s.ports)), p) || !s.portFreeOnNodes(p) {
			continue
		}
		s.ports[svc] = p
		return p, nil
	}
	return 0, fmt.Errorf("stack: no port free on every node address for %s", svc)
}

func (s *Stack) portFreeOnNodes(port int) bool {
	for _, n := range s.Nodes {
		ln, err := net.Listen("tcp", net.JoinHostPort(n.Address, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// Start starts the node's agent (building it first if the stack was started without agents).
func (n *Node) Start() error {
	if err := ensureBinary(n.Agent, AgentBinary); err != nil {
		return err
	}
	return n.Agent.Start()
}

// Stop takes the node down: it stops the agent gracefully (SIGTERM; SIGKILL after
// DefaultStopGrace), then kills the node's host services, which outlive their agent.
func (n *Node) Stop() error {
	err := n.Agent.Stop(0)
	KillUnder(n.StateDir)
	return err
}

// Kill crashes the node, as a machine that died: the agent and its host services get SIGKILL;
// its ZooKeeper session expires after the session timeout.
func (n *Node) Kill() error {
	err := n.Agent.Kill()
	KillUnder(n.StateDir)
	return err
}

// StopAgent stops the agent alone, gracefully: the host services keep running, and the agent
// started next adopts them.
func (n *Node) StopAgent() error { return n.Agent.Stop(0) }

// KillAgent crashes the agent alone (SIGKILL): the host services keep running, and the agent
// started next adopts them.
func (n *Node) KillAgent() error { return n.Agent.Kill() }

// Freeze stops the agent process (SIGSTOP) without killing it, as a machine cut off from the
// network or hung: its host services keep running, but it answers nobody and its ZooKeeper
// session expires after the session timeout. Thaw (SIGCONT) lets it go on.
func (n *Node) Freeze() error { return n.Agent.Signal(syscall.SIGSTOP) }

// Thaw resumes an agent Freeze stopped.
func (n *Node) Thaw() error { return n.Agent.Signal(syscall.SIGCONT) }

// Restart stops the agent gracefully and starts it again.
func (n *Node) Restart() error { return n.Agent.Restart(0) }

// URL is the address of path on the node's service listening on port.
func (n *Node) URL(port int, path string) string {
	return "http://" + net.JoinHostPort(n.Address, strconv.Itoa(port)) + path
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// Get asks the node's service on port for path and returns the status code and body.
func (n *Node) Get(ctx context.Context, port int, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL(port, path), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("%s: read %s: %w", n.Name, path, err)
	}
	return resp.StatusCode, string(b), nil
}

// Version asks the node's fixture service on port for its version.
func (n *Node) Version(ctx context.Context, port int) (string, error) {
	code, body, err := n.Get(ctx, port, "/version")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("%s: GET /version: status %d: %s", n.Name, code, strings.TrimSpace(body))
	}
	return strings.TrimSpace(body), nil
}

// ServiceVersions asks every node's fixture service of svc for its version: node name to
// version, or to "down: <error>" when it does not answer.
func (s *Stack) ServiceVersions(ctx context.Context, svc string) (map[string]string, error) {
	port, err := s.ServicePort(svc)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := n.Version(ctx, port)
			if err != nil {
				v = "down: " + err.Error()
			}
			mu.Lock()
			out[n.Name] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, nil
}

// WaitForServiceVersions waits until every listed node's fixture of svc answers version (all
// nodes when nodes is empty).
func (s *Stack) WaitForServiceVersions(ctx context.Context, svc, version string, timeout time.Duration, nodes ...string) error {
	if len(nodes) == 0 {
		for _, n := range s.Nodes {
			nodes = append(nodes, n.Name)
		}
	}
	sort.Strings(nodes)
	var last map[string]string
	err := WaitFor(ctx, timeout, fmt.Sprintf("%s at %s on %v", svc, version, nodes), func(ctx context.Context) (bool, error) {
		got, err := s.ServiceVersions(ctx, svc)
		if err != nil {
			return false, err
		}
		last = got
		for _, n := range nodes {
			if got[n] != version {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		// The last poll may have run out of time with the wait itself (every answer then reads
		// "context deadline exceeded"): ask once more, on a deadline of its own.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if got, perr := s.ServiceVersions(pctx, svc); perr == nil {
			last = got
		}
		return fmt.Errorf("%w; services answer %s", err, FormatMembers(last))
	}
	return nil
}
