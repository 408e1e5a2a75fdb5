// Command rollkeeper-agent is the node agent: it runs on every node (DaemonSet or system
// service), keeps the node's host services registered in ZooKeeper and rolls them forward when
// the plan, the deploy queue and the quorum allow. Once started it needs only ZooKeeper.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/collectors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/rollkeeper/rollkeeper/internal/envflag"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zkguard"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/nodeagent/pagecache"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
)

type options struct {
	node, address, labels, kubeconfig string
	zkServers, zkRoot, zkAuth         string
	zkAuthFile                        string
	zkTLS                             zkclient.TLSFiles
	insecureOpenZK                    bool
	trustedKeysFile                   string
	insecureUnsigned                  bool
	zkSessionTimeout                  time.Duration
	stateDir, backend, healthAddr     string
	pinBudget                         int64
	pinHold                           time.Duration
	fetchTimeout                      time.Duration
	rollCallWait                      time.Duration
	torrentWait                       time.Duration
	webSeedAfter                      time.Duration
	fetcher                           string
	maxUnpackedBytes                  int64
	maxArchiveEntries                 int
	p2pPort                           int
	uploadRate, downloadRate          int64
	zoneLabel, rackLabel              string
	metricsAddr                       string
	// systemd backend (--backend=systemd)
	systemdUnit, systemdSocket       string
	systemdViaBus, systemdManageUnit bool
	// exec backend
	execLeaveCgroup bool
}

func main() {
	var o options
	fs := flag.CommandLine
	fs.StringVar(&o.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (the Kubernetes Node name; env NODE_NAME)")
	fs.StringVar(&o.address, "node-address", "", "address the node's services listen on (default: the first non-loopback address)")
	fs.StringVar(&o.labels, "node-labels", "", "node labels k=v,k2=v2, merged over the labels read from the Node object")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig to read the Node's labels (in-cluster config when empty and available); labels are cached in the state dir for when the API server is down")
	fs.StringVar(&o.zkServers, "zk-servers", "", "ZooKeeper connect string host:port,host:port (required)")
	fs.StringVar(&o.zkRoot, "zk-root", zklayout.DefaultRoot, "root znode of rollkeeper's tree")
	fs.StringVar(&o.zkAuth, "zk-auth", "", "ZooKeeper digest credentials user:password; the znodes rollkeeper creates are then writable only with them (operator and agents share them). Prefer --zk-auth-file: a flag or variable is visible to more eyes")
	fs.StringVar(&o.zkAuthFile, "zk-auth-file", "", "file holding the ZooKeeper digest credentials user:password (a mounted Secret)")
	fs.StringVar(&o.zkTLS.CA, "zk-tls-ca-file", "", "connect to ZooKeeper over TLS (its secureClientPort), trusting the CA certificates in this PEM file")
	fs.StringVar(&o.zkTLS.Cert, "zk-tls-cert-file", "", "with --zk-tls-ca-file: this client's certificate (PEM), for servers that require one")
	fs.StringVar(&o.zkTLS.Key, "zk-tls-key-file", "", "with --zk-tls-cert-file: its private key (PEM)")
	fs.StringVar(&o.zkTLS.ServerName, "zk-tls-server-name", "", "with --zk-tls-ca-file: the name the servers' certificates must carry (default: the host of each --zk-servers address)")
	fs.StringVar(&o.trustedKeysFile, "trusted-keys-file", "", "PEM file of the public keys (PUBLIC KEY or CERTIFICATE blocks, ed25519) whose signatures on plans, releases and deploy entries this agent obeys; read again when it changes (a mounted ConfigMap)")
	fs.BoolVar(&o.insecureUnsigned, "insecure-allow-unsigned-plans", false, "INSECURE: run without --trusted-keys-file and obey unsigned plans. Anyone who can write to ZooKeeper can then make this agent run commands as root")
	fs.BoolVar(&o.insecureOpenZK, "insecure-allow-open-zookeeper", false, "INSECURE: run without ZooKeeper credentials. Anyone who can reach ZooKeeper can then make this agent run commands as root")
	fs.DurationVar(&o.zkSessionTimeout, "zk-session-timeout", 10*time.Second, "ZooKeeper session timeout")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/rollkeeper", "directory for versions, logs and cached labels")
	fs.StringVar(&o.backend, "backend", "exec", "host service backend: exec (detached processes the agent supervises and a restarted agent adopts), systemd (units, over D-Bus), or auto (systemd, with transient units, when the host booted with systemd: <run dir of --systemd-socket>/systemd/system exists; else exec)")
	fs.BoolVar(&o.execLeaveCgroup, "exec-leave-cgroup", false, "exec backend: move each service out of the agent's cgroups into those of the host's PID 1, so it outlives the agent's container (for an agent in a pod)")
	fs.StringVar(&o.systemdUnit, "systemd-unit", backend.DefaultUnitTemplate, "systemd backend: unit name of a service (%s: the service's name); its ExecStart must run the service from <state-dir>/store/<service>/current/")
	fs.StringVar(&o.systemdSocket, "systemd-socket", "", "systemd backend: D-Bus socket (default "+backend.DefaultSystemdSocket+", or "+backend.DefaultSystemBusSocket+" with --systemd-via-bus)")
	fs.BoolVar(&o.systemdViaBus, "systemd-via-bus", false, "systemd backend: reach systemd through the system bus (dbus-daemon) instead of its private socket, which only serves peers in the host's PID namespace")
	fs.BoolVar(&o.systemdManageUnit, "systemd-manage-units", false, "systemd backend: run each service as a transient unit built from its release, instead of the admin's installed unit")
	fs.StringVar(&o.healthAddr, "health-addr", "", "address for /healthz (empty: off); without a host (\":9440\") it binds --node-address, not every interface")
	fs.StringVar(&o.metricsAddr, "metrics-addr", ":9441", "address for Prometheus /metrics (\"0\" or empty: off); without a host (\":9441\") it binds --node-address, not every interface (\"0.0.0.0:9441\" for all, explicitly)")
	fs.StringVar(&o.fetcher, "fetcher", "p2p", "how artifacts are fetched: p2p (BitTorrent, ZooKeeper as tracker, origin as web seed) or http (straight from the origin)")
	fs.IntVar(&o.p2pPort, "p2p-port", 6881, "TCP port for peer connections, on --node-address; 0 picks a free one")
	fs.Int64Var(&o.uploadRate, "p2p-upload-rate", 0, "peer upload limit in bytes/s; 0: unlimited")
	fs.Int64Var(&o.downloadRate, "p2p-download-rate", 0, "peer download limit in bytes/s; 0: unlimited")
	fs.StringVar(&o.zoneLabel, "zone-label", "topology.kubernetes.io/zone", "node label naming the zone (peers in the same zone are preferred)")
	fs.StringVar(&o.rackLabel, "rack-label", "topology.rollkeeper.io/rack", "node label naming the rack (peers in the same rack are preferred first)")
	fs.Int64Var(&o.pinBudget, "pin-budget", 512<<20, "bytes of page cache the agent may lock (live version during downloads, staged version until healthy); 0: off")
	fs.DurationVar(&o.rollCallWait, "roll-call-wait", 0, "how long a node about to stop waits for the other registered nodes to answer its roll call (only nodes that answer count toward the quorum); 0: the ZooKeeper session timeout")
	fs.DurationVar(&o.fetchTimeout, "fetch-timeout", nodeagent.DefaultFetchTimeout, "how long one artifact fetch may take; past it the fetch is abandoned, reported as an Artifact failure and retried later")
	fs.DurationVar(&o.webSeedAfter, "web-seed-after", p2p.DefaultWebSeedAfter, "p2p fetcher: how long a download may get nothing from its peers before it fetches the missing pieces from the origin's URL (web seed); the swarm and the operator's seeder serve it otherwise; negative: from the start")
	fs.DurationVar(&o.torrentWait, "torrent-wait", 2*time.Minute, "p2p fetcher: how long to wait for a version's torrent before fetching it from the origin directly (the operator publishes it before the plan; this covers an operator that died in between); 0: wait as long as --fetch-timeout")
	fs.Int64Var(&o.maxUnpackedBytes, "max-unpacked-bytes", fetch.DefaultMaxUnpackedBytes, "most bytes one tar.gz artifact may unpack to (its files' data, counted as written); a larger one fails the fetch and leaves nothing behind. Default 4 GiB; 0: the default")
	fs.IntVar(&o.maxArchiveEntries, "max-archive-entries", fetch.DefaultMaxArchiveEntries, "most entries (files and directories) one tar.gz artifact may hold; 0: the default")
	fs.DurationVar(&o.pinHold, "pin-hold", 5*time.Minute, "how long a new version stays pinned after it became healthy")
	zopts := zap.Options{Development: false}
	zopts.BindFlags(fs)
	if err := envflag.Apply(fs, os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	flag.Parse()
	log := zap.New(zap.UseFlagOptions(&zopts)).WithName("agent")

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o, log); err != nil {
		log.Error(err, "agent failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log logr.Logger) error {
	if o.node == "" {
		return errors.New("--node-name (or NODE_NAME) is required")
	}
	if o.zkServers == "" {
		return errors.New("--zk-servers is required")
	}
	auth, err := zkclient.Credentials(o.zkAuth, o.zkAuthFile, o.insecureOpenZK)
	if err != nil {
		return err
	}
	if auth == "" {
		log.Info(zkclient.OpenWarning)
	}
	trust, err := zksign.AgentTrust(o.trustedKeysFile, o.insecureUnsigned)
	if err != nil {
		return err
	}
	if trust == nil {
		log.Info(zksign.UnsignedWarning)
	}
	switch o.backend {
	case "exec", "systemd":
	case "auto":
		o.backend, o.systemdManageUnit = autoBackend(o, log)
	default:
		return fmt.Errorf("--backend %q: exec, systemd or auto", o.backend)
	}
	layout, err := zklayout.New(o.zkRoot)
	if err != nil {
		return err
	}
	if o.address == "" {
		if o.address, err = defaultAddress(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(o.stateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	labels, err := nodeLabels(ctx, o, log)
	if err != nil {
		return err
	}
	log = log.WithValues("node", o.node)
	log.Info("starting", "address", o.address, "labels", labels, "zk", o.zkServers, "root", o.zkRoot, "stateDir", o.stateDir)

	zcfg := zkclient.Config{Servers: zkclient.ParseServers(o.zkServers),
		SessionTimeout: o.zkSessionTimeout, Auth: auth, Logger: log.WithName("zk"), SendBuffer: zkclient.AgentSendBuffer}
	if o.zkTLS.Enabled() {
		if zcfg.TLS, err = zkclient.LoadTLS(o.zkTLS); err != nil {
			return err
		}
	}
	zk, err := zkclient.Dial(ctx, zcfg)
	if err != nil {
		return err
	}
	defer zk.Close()
	var guard *zkguard.Guard
	if auth != "" {
		if guard, err = zkguard.New(zk, layout, log.WithName("zkguard")); err != nil {
			return err
		}
		// Refuse to start on a tree others may change; a running agent stops acting instead.
		if err := guard.Check(ctx); err != nil {
			return err
		}
	}

	var be backend.Backend
	if o.backend == "systemd" {
		// systemd owns the units: they keep running when the agent stops or restarts.
		sd := backend.NewSystemd(backend.SystemdConfig{UnitTemplate: o.systemdUnit, Socket: o.systemdSocket,
			ViaBus: o.systemdViaBus, ManageUnits: o.systemdManageUnit, Log: log.WithName("systemd"),
			// The store's layout (store.CurrentLink): where a unit runs the service from.
			CurrentLink: func(svc string) string { return filepath.Join(o.stateDir, "store", svc, "current") }})
		defer sd.Close()
		be = sd
	} else {
		ex, err := backend.NewExecConfig(backend.ExecConfig{Dir: filepath.Join(o.stateDir, "services"),
			LeaveCgroup: o.execLeaveCgroup, Log: log.WithName("exec")})
		if err != nil {
			return err
		}
		// The services keep running when the agent stops: the next agent adopts them.
		defer ex.Close()
		be = ex
	}
	metrics := nodeagent.NewMetrics()
	limits := fetch.Limits{MaxUnpackedBytes: o.maxUnpackedBytes, MaxEntries: o.maxArchiveEntries}
	httpFetcher := fetch.NewHTTP()
	httpFetcher.Limits = limits
	var fetcher fetch.Fetcher = httpFetcher
	switch o.fetcher {
	case "http":
	case "p2p":
		cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(o.stateDir, "torrent"), ListenHost: o.address, ListenPort: o.p2pPort,
			UploadRate: o.uploadRate, DownloadRate: o.downloadRate, WebSeedAfter: o.webSeedAfter, Logger: log.WithName("p2p"),
			// Only the peers registered in a version's swarm may download it from this node.
			OnlyListedPeers: true})
		if err != nil {
			return fmt.Errorf("torrent client on %s:%d (--node-address, --p2p-port): %w", o.address, o.p2pPort, err)
		}
		defer cl.Close()
		pf := fetch.NewP2P(fetch.P2PConfig{Client: cl, Tracker: tracker.Tracker{ZK: zk, Layout: layout},
			Node: o.node, Host: o.address, Topology: tracker.Topology{Zone: labels[o.zoneLabel], Rack: labels[o.rackLabel]},
			DataDir: filepath.Join(o.stateDir, "torrent", "data"), TorrentWait: o.torrentWait, Limits: limits, Logger: log.WithName("p2p")})
		defer pf.Close()
		fetcher = pf
		metrics.WatchP2P(pf)
	default:
		return fmt.Errorf("--fetcher %q: p2p or http", o.fetcher)
	}
	st, err := store.New(filepath.Join(o.stateDir, "store"), fetcher)
	if err != nil {
		return err
	}
	pinner := pagecache.New(o.pinBudget, log.WithName("pagecache"))
	defer pinner.Close()
	agent, err := nodeagent.New(nodeagent.Config{Node: o.node, Address: o.address, Labels: labels,
		Layout: layout, ZK: zk, Backend: be, Store: st, Logger: log, Pinner: pinner, PinHold: o.pinHold, FetchTimeout: o.fetchTimeout, RollCallWait: o.rollCallWait, Metrics: metrics,
		Guard: guard, Trust: trust})
	if err != nil {
		return err
	}
	// The node's own address, not every interface: the endpoints are for the node's network.
	o.metricsAddr, o.healthAddr = onNode(o.metricsAddr, o.address), onNode(o.healthAddr, o.address)
	stopMetrics, err := serveMetrics(o.metricsAddr, metrics, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	if o.healthAddr != "" {
		srv := &http.Server{Addr: o.healthAddr, ReadHeaderTimeout: 5 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				select {
				case <-zk.Session().Done:
					http.Error(w, "no zookeeper session", http.StatusServiceUnavailable)
				default:
					fmt.Fprintln(w, "ok")
				}
			})}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "health endpoint")
			}
		}()
		defer srv.Close()
	}
	return agent.Run(ctx)
}

// autoBackend picks the backend for --backend=auto: systemd, running each service as a transient
// unit, when the host booted with systemd (as sd_booted: /run/systemd/system exists, looked up
// in the run directory the systemd socket is under, which is the host's /run as the pod mounts
// it), else exec. The check is on the host's boot, not on reaching systemd right now: a systemd
// that is restarting must not make a restarted agent start exec copies of its units.
func autoBackend(o options, log logr.Logger) (name string, manageUnits bool) {
	socket := o.systemdSocket
	if socket == "" {
		socket = backend.DefaultSystemdSocket
		if o.systemdViaBus {
			socket = backend.DefaultSystemBusSocket
		}
	}
	marker := filepath.Join(filepath.Dir(filepath.Dir(socket)), "systemd", "system")
	fi, err := os.Stat(marker)
	if err == nil && fi.IsDir() {
		log.Info("backend auto: the host booted with systemd; using systemd with transient units", "found", marker, "socket", socket)
		return "systemd", true
	}
	log.Info("backend auto: the host did not boot with systemd; using exec (detached processes, adopted on restart)", "missing", marker, "err", fmt.Sprint(err))
	return "exec", o.systemdManageUnit
}

// nodeLabels reads the Node's labels from the API server when one is configured, caching them
// in the state dir; when the API server is unreachable the cache is used. --node-labels wins.
func nodeLabels(ctx context.Context, o options, log logr.Logger) (map[string]string, error) {
	cache := filepath.Join(o.stateDir, "node-labels.json")
	labels := map[string]string{}
	cfg, err := kubeConfig(o.kubeconfig)
	if err == nil && cfg != nil {
		var cs *kubernetes.Clientset
		if cs, err = kubernetes.NewForConfig(cfg); err == nil {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			node, gerr := cs.CoreV1().Nodes().Get(lctx, o.node, metav1.GetOptions{})
			cancel()
			err = gerr
			if gerr == nil {
				labels = node.Labels
				if b, merr := json.Marshal(labels); merr == nil {
					_ = os.WriteFile(cache, b, 0o644)
				}
			}
		}
	}
	if err != nil {
		b, rerr := os.ReadFile(cache)
		if rerr == nil && json.Unmarshal(b, &labels) == nil {
			log.Info("API server unavailable; using cached node labels", "err", err.Error(), "cache", cache)
		} else {
			log.Info("no node labels from the API server and no cache; using --node-labels only", "err", err.Error())
		}
	}
	for _, kv := range strings.Split(o.labels, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--node-labels: %q is not key=value", kv)
		}
		labels[k] = v
	}
	return labels, nil
}

// serveMetrics serves the agent's metrics, with the Go runtime and process collectors, at
// /metrics on addr ("0" or empty: off). The address is bound before it returns, so a taken port
// fails the start instead of going unnoticed.
func serveMetrics(addr string, m *nodeagent.Metrics, log logr.Logger) (func(), error) {
	if addr == "" || addr == "0" {
		return func() {}, nil
	}
	m.Registry().MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint (--metrics-addr %s): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "metrics endpoint")
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

func kubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		return rest.InClusterConfig()
	}
	return nil, nil
}

func defaultAddress() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "127.0.0.1", nil
}

// onNode puts a host-less listen address (":9441") on the node's address; "", "0" and
// addresses with a host (an explicit "0.0.0.0:9441" included) are kept.
func onNode(addr, nodeAddress string) string {
	if addr == "" || addr == "0" {
		return addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	return net.JoinHostPort(nodeAddress, port)
}
