package localstack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/localstack/zkserver"
)

// Scheme knows the built-in Kubernetes types and rollkeeper's API.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("scheme: %w", err)
	}
	if err := rkv1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("scheme: %w", err)
	}
	return s, nil
}

// ControlPlane is a real kube-apiserver and etcd (envtest) with rollkeeper's CRDs installed.
type ControlPlane struct {
	Env *envtest.Environment
	// Config is the admin user's REST config.
	Config *rest.Config
	// Client is a controller-runtime client for the admin user with Scheme.
	Client client.Client
	// Kubeconfig is a file with the admin user's credentials (system:masters) for processes
	// and kubectl.
	Kubeconfig string

	logs *controlPlaneLogs
}

// AssetsDir is where envtest finds kube-apiserver and etcd: $KUBEBUILDER_ASSETS, else <repo>/bin.
func AssetsDir() (string, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// CRDDirEnv overrides the directory of CRD manifests the control plane installs
// (default <repo>/config/crd/bases).
const CRDDirEnv = "ROLLKEEPER_CRD_DIR"

func crdDir(root string) string {
	if d := os.Getenv(CRDDirEnv); d != "" {
		return d
	}
	return filepath.Join(root, "config", "crd", "bases")
}

// StartControlPlane starts kube-apiserver and etcd from AssetsDir, installs the CRDs from
// <repo>/config/crd/bases ($ROLLKEEPER_CRD_DIR) and writes an admin kubeconfig to dir/kubeconfig.
func StartControlPlane(dir string) (*ControlPlane, error) {
	return StartControlPlaneWith(dir, ControlPlaneOptions{})
}

// ControlPlaneOptions adjusts StartControlPlaneWith.
type ControlPlaneOptions struct {
	// NoCRDs leaves the CRDs out (a helm install brings them).
	NoCRDs bool
	// ConfigureAPIServer changes kube-apiserver's flags before it starts (envtest's defaults
	// suit an API server without nodes; a real node needs more).
	ConfigureAPIServer func(*envtest.APIServer)
}

// StartControlPlaneWith is StartControlPlane with options.
func StartControlPlaneWith(dir string, opts ControlPlaneOptions) (*ControlPlane, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("control plane: %s missing in %s (run hack/install-deps.sh or make deps): %w", b, assets, err)
		}
	}
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	var (
		env  *envtest.Environment
		logs *controlPlaneLogs
	)
	for attempt := 1; ; attempt++ {
		env, logs, err = startEnv(dir, root, assets, scheme, opts)
		if err == nil {
			break
		}
		// A port drawn free may be bound by another process before kube-apiserver or etcd
		// binds it; envtest's own retries reuse the same ports, so pick new ones.
		if !logs.portTaken() || attempt == controlPlaneAttempts {
			return nil, fmt.Errorf("control plane: start envtest (assets %s, attempt %d): %w\n%s", assets, attempt, err, logs.tails())
		}
	}
	cp := &ControlPlane{Env: env, logs: logs}
	ok := false
	defer func() {
		if !ok {
			_ = cp.Stop()
		}
	}()

	admin, err := env.AddUser(envtest.User{Name: "rollkeeper-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("control plane: add admin user: %w", err)
	}
	cp.Config = admin.Config()
	kc, err := admin.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("control plane: admin kubeconfig: %w", err)
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, kc, 0o600); err != nil {
		return nil, fmt.Errorf("control plane: write kubeconfig: %w", err)
	}
	cp.Client, err = client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("control plane: client: %w", err)
	}
	ok = true
	return cp, nil
}

// Stop stops kube-apiserver and etcd.
func (cp *ControlPlane) Stop() error {
	if cp == nil || cp.Env == nil {
		return nil
	}
	err := cp.Env.Stop()
	cp.logs.close()
	if err != nil {
		return fmt.Errorf("control plane: stop: %w", err)
	}
	return nil
}

// NodeObject is a Node named name with labels and an InternalIP address.
func NodeObject(name, address string, labels map[string]string) *corev1.Node {
	n := &corev1.Node{}
	n.Name = name
	n.Labels = labels
	if address != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: address}}
	}
	return n
}

// controlPlaneStartTimeout bounds how long kube-apiserver or etcd may take to become healthy
// ($KUBEBUILDER_CONTROLPLANE_START_TIMEOUT overrides it). It only guards against a hang: envtest
// sees at once when either process exits. Starting kube-apiserver is CPU-bound, so on a busy
// 2-core machine (four chaos stacks at a time) it took more than envtest's default of 20 s;
// envtest then killed it and started it again, five times, each attempt throwing away the
// CPU the last one had spent, and the run failed.
const controlPlaneStartTimeout = 5 * time.Minute

// controlPlanePorts draws the ports of etcd (client, peer) and kube-apiserver; a test replaces it.
var controlPlanePorts = zkserver.FreePorts

// controlPlaneAttempts is how many times a start is tried, with new ports, when a port was taken.
const controlPlaneAttempts = 5

// startEnv starts envtest once: ports drawn below the ephemeral range (zkserver.FreePorts) and
// the output of kube-apiserver and etcd in dir/kube-apiserver.log and dir/etcd.log.
func startEnv(dir, root, assets string, scheme *runtime.Scheme, opts ControlPlaneOptions) (*envtest.Environment, *controlPlaneLogs, error) {
	logs, err := openControlPlaneLogs(dir)
	if err != nil {
		return nil, nil, err
	}
	ports, err := controlPlanePorts(3)
	if err != nil {
		logs.close()
		return nil, nil, fmt.Errorf("control plane: %w", err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{crdDir(root)},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		env.ControlPlaneStartTimeout = controlPlaneStartTimeout
	}
	if opts.NoCRDs {
		env.CRDDirectoryPaths, env.ErrorIfCRDPathMissing = nil, false
	}
	etcd := &envtest.Etcd{
		URL: &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))},
		Out: logs.etcd, Err: logs.etcd,
	}
	etcd.Configure().Set("listen-peer-urls", "http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])))
	env.ControlPlane.Etcd = etcd
	api := env.ControlPlane.GetAPIServer()
	api.SecureServing.Address, api.SecureServing.Port = "127.0.0.1", strconv.Itoa(ports[2])
	api.Out, api.Err = logs.apiserver, logs.apiserver
	if opts.ConfigureAPIServer != nil {
		opts.ConfigureAPIServer(api)
	}
	if _, err := env.Start(); err != nil {
		// Start may fail after launching the processes (for example on an invalid CRD).
		_ = env.Stop()
		logs.close()
		return nil, logs, err
	}
	return env, logs, nil
}

// controlPlaneLogs holds the output files of kube-apiserver and etcd (rewritten on each attempt).
type controlPlaneLogs struct {
	apiserver, etcd *os.File
}

func openControlPlaneLogs(dir string) (*controlPlaneLogs, error) {
	a, err := os.Create(filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	e, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("control plane: %w", err)
	}
	return &controlPlaneLogs{apiserver: a, etcd: e}, nil
}

// close closes the files; the processes had them as their own descriptors and are stopped.
func (l *controlPlaneLogs) close() {
	if l == nil {
		return
	}
	l.apiserver.Close()
	l.etcd.Close()
}

// portTaken says whether kube-apiserver or etcd failed to bind a port.
func (l *controlPlaneLogs) portTaken() bool {
	if l == nil {
		return false
	}
	for _, f := range []*os.File{l.apiserver, l.etcd} {
		if strings.Contains(tailOf(f.Name(), 1<<20), "address already in use") {
			return true
		}
	}
	return false
}

// tails is the end of both logs, for an error message.
func (l *controlPlaneLogs) tails() string {
	if l == nil {
		return ""
	}
	return fmt.Sprintf("--- %s (end) ---\n%s\n--- %s (end) ---\n%s", l.apiserver.Name(), tailOf(l.apiserver.Name(), 3000), l.etcd.Name(), tailOf(l.etcd.Name(), 3000))
}

// tailOf is the last maxBytes bytes of the file at p (or why it could not be read).
func tailOf(p string, maxBytes int64) string {
	f, err := os.Open(p)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(0, st.Size()-maxBytes)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return err.Error()
	}
	return string(b)
}
