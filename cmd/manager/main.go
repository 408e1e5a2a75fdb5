// Command rollkeeper-manager is the rollkeeper operator: it reconciles RollingDeploy objects into
// ZooKeeper, where the node agents pick up their plans, and reports the rollout in status.
//
// Every flag can also be set from the environment as ROLLKEEPER_<FLAG> (upper case, dashes as
// underscores: --zk-servers is ROLLKEEPER_ZK_SERVERS); a flag on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/controllers"
	"github.com/rollkeeper/rollkeeper/internal/envflag"
	"github.com/rollkeeper/rollkeeper/internal/seeder"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zkguard"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
)

// LeaderElectionID names the Lease the manager replicas compete for.
const LeaderElectionID = "rollkeeper-manager.rollkeeper.io"

// config is everything the flags set.
type config struct {
	ZKServers               string
	ZKRoot                  string
	ZKSessionTimeout        time.Duration
	ZKAuth                  string
	ZKAuthFile              string
	ZKTLS                   zkclient.TLSFiles
	InsecureOpenZooKeeper   bool
	SigningKeyFile          string
	TrustedKeysFile         string
	InsecureUnsigned        bool
	MetricsAddr             string
	MetricsSecure           bool
	MetricsCertDir          string
	ProbeAddr               string
	LeaderElect             bool
	LeaderElectionNamespace string
	// Seeder (peer-to-peer distribution).
	P2P        bool
	P2PHost    string
	P2PPort    int
	UploadRate int64
	SeederDir  string
	// SeederMaxBytes bounds what SeederDir's artifacts take.
	SeederMaxBytes int64
	// Origins the seeder may read (comma-separated; parsed by originPolicy).
	SeederFileRoots, SeederAllowOriginCIDRs string
}

// bindFlags registers the manager's flags on fs (controller-runtime registers --kubeconfig on
// the default FlagSet itself).
func bindFlags(fs *flag.FlagSet, c *config) {
	fs.StringVar(&c.ZKServers, "zk-servers", "", "ZooKeeper ensemble, comma-separated host:port list (required).")
	fs.StringVar(&c.ZKRoot, "zk-root", zklayout.DefaultRoot, "Root znode of rollkeeper's tree.")
	fs.DurationVar(&c.ZKSessionTimeout, "zk-session-timeout", 10*time.Second, "ZooKeeper session timeout.")
	fs.StringVar(&c.ZKAuth, "zk-auth", "", "ZooKeeper digest credentials user:password; the znodes rollkeeper creates are then writable only with them (operator and agents share them). Prefer --zk-auth-file.")
	fs.StringVar(&c.ZKAuthFile, "zk-auth-file", "", "File holding the ZooKeeper digest credentials user:password (a mounted Secret).")
	fs.StringVar(&c.ZKTLS.CA, "zk-tls-ca-file", "", "Connect to ZooKeeper over TLS (its secureClientPort), trusting the CA certificates in this PEM file.")
	fs.StringVar(&c.ZKTLS.Cert, "zk-tls-cert-file", "", "With --zk-tls-ca-file: this client's certificate (PEM), for servers that require one.")
	fs.StringVar(&c.ZKTLS.Key, "zk-tls-key-file", "", "With --zk-tls-cert-file: its private key (PEM).")
	fs.StringVar(&c.ZKTLS.ServerName, "zk-tls-server-name", "", "With --zk-tls-ca-file: the name the servers' certificates must carry (default: the host of each --zk-servers address).")
	fs.StringVar(&c.SigningKeyFile, "signing-key-file", "", "PEM file of the ed25519 private key (PKCS#8) that signs every plan, release and deploy entry; agents obey only signed ones (a mounted Secret).")
	fs.StringVar(&c.TrustedKeysFile, "trusted-keys-file", "", "PEM file of further public keys whose signatures are valid (the agents' trusted keys, during a key rotation); what they signed is re-signed with --signing-key-file's key at start.")
	fs.BoolVar(&c.InsecureUnsigned, "insecure-allow-unsigned-plans", false, "INSECURE: run without --signing-key-file and write unsigned plans; agents must then be told to obey unsigned plans too, so anyone who can write to ZooKeeper can make every agent run commands as root.")
	fs.BoolVar(&c.InsecureOpenZooKeeper, "insecure-allow-open-zookeeper", false, "INSECURE: run without ZooKeeper credentials. Anyone who can reach ZooKeeper can then make every agent run commands as root.")
	fs.StringVar(&c.MetricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; \"0\" turns it off.")
	fs.BoolVar(&c.MetricsSecure, "metrics-secure", true, "Serve the metrics over HTTPS, only to clients whose bearer token the API server authenticates (TokenReview) "+
		"and authorizes for GET /metrics (SubjectAccessReview; the metrics-reader ClusterRole). false: INSECURE, plain HTTP without authentication, anyone who reaches the port reads the metrics.")
	fs.StringVar(&c.MetricsCertDir, "metrics-cert-dir", "", "Directory with the metrics server's tls.crt and tls.key (a mounted Secret); "+
		"empty: a self-signed certificate generated at start. Only with --metrics-secure.")
	fs.StringVar(&c.ProbeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	fs.BoolVar(&c.LeaderElect, "leader-elect", false, "Elect a leader among manager replicas; only the leader reconciles.")
	fs.StringVar(&c.LeaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease (default: the pod's namespace when in a cluster).")
	fs.BoolVar(&c.P2P, "p2p", true, "Publish every target version as a torrent and seed it (the nodes fetch peer to peer).")
	fs.StringVar(&c.P2PHost, "p2p-host", "", "Address the nodes reach the seeder on (default $POD_IP, else the first non-loopback address).")
	fs.IntVar(&c.P2PPort, "p2p-port", 6881, "TCP port the seeder listens on; 0 picks a free one.")
	fs.Int64Var(&c.UploadRate, "p2p-upload-rate", 0, "Seeder upload limit in bytes/s; 0: unlimited.")
	fs.StringVar(&c.SeederDir, "seeder-dir", "/var/lib/rollkeeper-seeder", "Directory for the artifacts read from the origins (an emptyDir in the chart).")
	c.SeederMaxBytes = seeder.DefaultMaxBytes
	fs.Var((*byteSize)(&c.SeederMaxBytes), seeder.FlagMaxBytes, maxBytesHelp)
	fs.StringVar(&c.SeederFileRoots, seeder.FlagFileRoots, "", fileRootsHelp)
	fs.StringVar(&c.SeederAllowOriginCIDRs, seeder.FlagAllowOriginCIDRs, "", allowOriginCIDRsHelp)
}

// validate checks the flags and returns the znode layout, the servers and the ZooKeeper
// credentials ("" when running open by choice).
func (c *config) validate() (zklayout.Layout, []string, string, error) {
	servers := zkclient.ParseServers(c.ZKServers)
	if len(servers) == 0 {
		return zklayout.Layout{}, nil, "", errors.New("--zk-servers (or " + envflag.Name("zk-servers") + ") is required: the ZooKeeper ensemble as host:port[,host:port...]")
	}
	layout, err := zklayout.New(c.ZKRoot)
	if err != nil {
		return zklayout.Layout{}, nil, "", fmt.Errorf("--zk-root: %w", err)
	}
	if c.ZKSessionTimeout <= 0 {
		return zklayout.Layout{}, nil, "", errors.New("--zk-session-timeout must be positive")
	}
	auth, err := zkclient.Credentials(c.ZKAuth, c.ZKAuthFile, c.InsecureOpenZooKeeper)
	if err != nil {
		return zklayout.Layout{}, nil, "", err
	}
	return layout, servers, auth, nil
}

// metricsOptions is the metrics server: by default HTTPS (controller-runtime generates a
// self-signed certificate unless --metrics-cert-dir gives one) behind controller-runtime's
// authentication and authorization filter, which checks the client's bearer token with a
// TokenReview and its right to GET /metrics with a SubjectAccessReview.
func (c *config) metricsOptions() (metricsserver.Options, error) {
	o := metricsserver.Options{BindAddress: c.MetricsAddr}
	if !c.MetricsSecure {
		if c.MetricsCertDir != "" {
			return o, errors.New("--metrics-cert-dir needs --metrics-secure")
		}
		return o, nil
	}
	o.SecureServing = true
	o.FilterProvider = filters.WithAuthenticationAndAuthorization
	if c.MetricsCertDir != "" {
		o.CertDir, o.CertName, o.KeyName = c.MetricsCertDir, "tls.crt", "tls.key"
	}
	return o, nil
}

// checkMetricsCertDir fails when --metrics-cert-dir lacks the certificate: controller-runtime
// would silently serve a self-signed one instead.
func (c *config) checkMetricsCertDir() error {
	if c.MetricsCertDir == "" {
		return nil
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if _, err := os.Stat(filepath.Join(c.MetricsCertDir, f)); err != nil {
			return fmt.Errorf("--metrics-cert-dir: %w", err)
		}
	}
	return nil
}

func main() {
	var cfg config
	bindFlags(flag.CommandLine, &cfg)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	if err := envflag.Apply(flag.CommandLine, os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	if err := run(ctrl.SetupSignalHandler(), cfg); err != nil {
		log.Error(err, "rollkeeper-manager failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	log := ctrl.Log.WithName("setup")
	layout, servers, auth, err := cfg.validate()
	if err != nil {
		return err
	}
	signer, trust, err := zksign.OperatorKeys(cfg.SigningKeyFile, cfg.TrustedKeysFile, cfg.InsecureUnsigned)
	if err != nil {
		return err
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("register Kubernetes types: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return fmt.Errorf("register rollkeeper types: %w", err)
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig (--kubeconfig, KUBECONFIG or in-cluster): %w", err)
	}
	metricsOpts, err := cfg.metricsOptions()
	if err != nil {
		return err
	}
	if err := cfg.checkMetricsCertDir(); err != nil {
		return err
	}
	if cfg.MetricsAddr != "0" && !cfg.MetricsSecure {
		log.Info("WARNING: metrics served over plain HTTP without authentication (--metrics-secure=false)", "address", cfg.MetricsAddr)
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        cfg.ProbeAddr,
		LeaderElection:                cfg.LeaderElect,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       cfg.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	if auth == "" {
		log.Info(zkclient.OpenWarning)
	}
	if signer == nil {
		log.Info(zksign.UnsignedWarning)
	} else {
		log.Info("signing plans, releases and deploy entries", "key", signer.KeyID())
		if kf, ok := trust.(*zksign.KeyFile); ok && !kf.Lists(signer.KeyID()) {
			// The chart gives the operator the agents' file: then this is a misconfiguration.
			log.Info("WARNING: the signing key is not among the --trusted-keys-file keys; agents given the same file refuse everything this operator signs",
				"key", signer.KeyID(), "file", cfg.TrustedKeysFile)
		}
	}
	log.Info("connecting to ZooKeeper", "servers", servers, "root", layout.Root(), "sessionTimeout", cfg.ZKSessionTimeout)
	zcfg := zkclient.Config{
		Servers:        servers,
		SessionTimeout: cfg.ZKSessionTimeout,
		Auth:           auth,
		Logger:         ctrl.Log.WithName("zookeeper"),
	}
	if cfg.ZKTLS.Enabled() {
		if zcfg.TLS, err = zkclient.LoadTLS(cfg.ZKTLS); err != nil {
			return err
		}
	}
	zk, err := zkclient.Dial(ctx, zcfg)
	if err != nil {
		return fmt.Errorf("connect to ZooKeeper %s (--zk-servers): %w", strings.Join(servers, ","), err)
	}
	defer zk.Close()
	var guard *zkguard.Guard
	if auth != "" {
		if guard, err = zkguard.New(zk, layout, ctrl.Log.WithName("zkguard")); err != nil {
			return err
		}
		// Refuse to start on a tree others may change; once running, passes write nothing
		// while it is open (the guard checks again after every reconnection).
		if err := guard.Check(ctx); err != nil {
			return err
		}
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { guard.Run(ctx); return nil })); err != nil {
			return fmt.Errorf("add ZooKeeper ACL guard: %w", err)
		}
		if err := mgr.AddReadyzCheck("zookeeper-acl", func(*http.Request) error { return guard.Err() }); err != nil {
			return fmt.Errorf("add zookeeper-acl readyz check: %w", err)
		}
	}

	r := &controllers.RollingDeployReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("rollkeeper-manager"),
		ZK:        zk,
		Layout:    layout,
		Guard:     guard,
		Signer:    signer,
		Trust:     trust,
	}
	if signer != nil {
		// Once leader: what an older key signed is signed again, so it can be retired.
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			n, err := r.Resign(ctx)
			if err != nil && ctx.Err() == nil {
				log.Error(err, "re-signing with the current key stopped; the next start tries again", "resigned", n)
				return nil
			}
			log.Info("re-signed what other trusted keys signed", "resigned", n, "key", signer.KeyID())
			return nil
		})); err != nil {
			return fmt.Errorf("add re-signing: %w", err)
		}
	}
	if r.PublishHook, err = testHook(log, os.LookupEnv); err != nil {
		return err
	}
	if cfg.P2P {
		sd, err := newSeeder(cfg, zk, layout, r.ServiceChanged)
		if err != nil {
			return err
		}
		defer sd.close()
		r.Seeder = sd.Seeder
		if err := mgr.Add(sd.Seeder); err != nil {
			return fmt.Errorf("add seeder: %w", err)
		}
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up RollingDeploy controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("zookeeper", zkCheck(zk, layout)); err != nil {
		return fmt.Errorf("add zookeeper readyz check: %w", err)
	}

	log.Info("starting manager", "leaderElect", cfg.LeaderElect, "leaderElectionID", LeaderElectionID)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// zkCheck is a readiness check: ZooKeeper answers within two seconds.
func zkCheck(zk *zkclient.Client, layout zklayout.Layout) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := zk.Exists(ctx, layout.Root())
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("zookeeper: %w", err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("zookeeper did not answer: %w", ctx.Err())
		}
	}
}
