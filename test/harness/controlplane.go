package harness

import (
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
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
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{crdDir(root)},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	if opts.NoCRDs {
		env.CRDDirectoryPaths, env.ErrorIfCRDPathMissing = nil, false
	}
	if opts.ConfigureAPIServer != nil {
		opts.ConfigureAPIServer(env.ControlPlane.GetAPIServer())
	}
	if _, err := env.Start(); err != nil {
		// Start may fail after launching the processes (for example on an invalid CRD).
		_ = env.Stop()
		return nil, fmt.Errorf("control plane: start envtest (assets %s): %w", assets, err)
	}
	cp := &ControlPlane{Env: env}
	ok := false
	defer func() {
		if !ok {
			_ = env.Stop()
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
	if err := cp.Env.Stop(); err != nil {
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
