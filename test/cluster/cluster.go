// Package cluster brings up a real single-node Kubernetes cluster on this machine for the
// real-cluster e2e (and for users without a cluster: cmd in ./localcluster): etcd and
// kube-apiserver (envtest, with node-ready flags), kube-controller-manager, kube-scheduler and
// a kubelet, all v1.37.2 built from the Go module proxy into bin/ (hack/install-deps.sh), over
// containerd 1.6 with runc from Debian. No registry is reachable: the images (rollkeeper's,
// and the sandbox "pause" image) are OCI archives that `make images` writes without Docker and
// Start imports with `ctr -n k8s.io images import`.
//
// The node runs as root on the host and changes it: kubelet sets kernel sysctls and creates
// cgroups, containerd mounts container root filesystems. Stop undoes all of that, and Start
// first sweeps what a killed earlier run left (see sweep.go).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// SandboxImage is the name the pause archive is imported under and containerd's sandbox image.
const SandboxImage = "registry.k8s.io/pause:rollkeeper"

// Options configures Start.
type Options struct {
	// Dir holds every file of the cluster: certificates, kubeconfigs, containerd's root and
	// state, kubelet's root, pod logs and process logs. It should be fresh and on a disk that
	// supports overlayfs.
	Dir string
	// BinDir holds kube-apiserver, etcd, kubelet, kube-controller-manager and kube-scheduler
	// (default: harness.AssetsDir, i.e. $KUBEBUILDER_ASSETS or <repo>/bin).
	BinDir string
	// Images are OCI image archives to import; one of them must be SandboxImage.
	Images []string
	// NodeName is the node's name (default "rk-node").
	NodeName string
	// Logf reports progress (default: discard).
	Logf func(format string, args ...any)
}

// Cluster is a running single-node cluster.
type Cluster struct {
	// ControlPlane is the API server and etcd; its Client and Kubeconfig are the admin's
	// (system:masters).
	*harness.ControlPlane
	Clientset *kubernetes.Clientset
	// NodeName and NodeIP: the node as registered (its InternalIP is what hostNetwork pods see
	// as status.hostIP).
	NodeName string
	NodeIP   string
	// APIHost and APIPort are where the API server listens (127.0.0.1). There is no
	// kube-proxy, so the kubernetes Service's ClusterIP leads nowhere: pods on the host network
	// reach the API server here (KUBERNETES_SERVICE_HOST/PORT).
	APIHost string
	APIPort string

	dir      string
	logf     func(string, ...any)
	ctrSock  string
	procs    []*harness.Process // in start order
	sysctls  map[string]string
	netnsPre map[string]bool
	chains   map[string][]string // KUBE-* iptables chains before start
}

// kubelet changes these sysctls (setupKernelTunables); Stop restores their values from before.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// Start brings the cluster up and waits for the node to be Ready. On error everything already
// started is torn down.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("cluster: a kubelet and containerd need root")
	}
	if opts.NodeName == "" {
		opts.NodeName = "rk-node"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = harness.AssetsDir(); err != nil {
			return nil, err
		}
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kubelet", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("cluster: %s missing in %s (run hack/install-deps.sh): %w", b, opts.BinDir, err)
		}
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("cluster: %s not found (hack/install-deps.sh node-runtime installs Debian's containerd, runc and containernetworking-plugins): %w", b, err)
		}
	}
	if len(opts.Images) == 0 {
		return nil, errors.New("cluster: no images to import (make images writes them to bin/images)")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	Sweep(opts.Logf)
	if err := markRun(dir); err != nil {
		return nil, err
	}

	c = &Cluster{dir: dir, logf: opts.Logf, NodeName: opts.NodeName, netnsPre: listNetns()}
	c.sysctls, err = readSysctls()
	if err != nil {
		return nil, err
	}
	if c.chains, err = kubeChains(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()

	start := time.Now()
	if err := c.startControlPlane(); err != nil {
		return c, err
	}
	c.logf("cluster: API server at https://%s:%s (%s)", c.APIHost, c.APIPort, time.Since(start).Round(time.Millisecond))
	if err := c.startContainerd(ctx, opts.Images); err != nil {
		return c, err
	}
	c.logf("cluster: containerd up, %d images imported (%s)", len(opts.Images), time.Since(start).Round(time.Millisecond))
	if err := c.startControllers(opts.BinDir); err != nil {
		return c, err
	}
	if err := c.startKubelet(opts.BinDir); err != nil {
		return c, err
	}
	if err := c.waitNodeReady(ctx); err != nil {
		return c, err
	}
	c.logf("cluster: node %s (%s) Ready after %s", c.NodeName, c.NodeIP, time.Since(start).Round(time.Millisecond))
	return c, nil
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

func (c *Cluster) startControlPlane() error {
	cp, err := harness.StartControlPlaneWith(c.path("apiserver"), harness.ControlPlaneOptions{
		NoCRDs: true,
		ConfigureAPIServer: func(s *envtest.APIServer) {
			args := s.Configure()
			// envtest turns the ServiceAccount admission plugin off (no pods there); a kubelet
			// needs it to mount the service account tokens pods authenticate with.
			args.Disable("disable-admission-plugins")
			args.Set("enable-admission-plugins", "NodeRestriction")
			args.Set("authorization-mode", "Node", "RBAC")
			args.Set("allow-privileged", "true")
		},
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	c.ControlPlane = cp
	u, err := url.Parse(cp.Config.Host)
	if err != nil || u.Port() == "" {
		return fmt.Errorf("cluster: API server address %q: no port (%v)", cp.Config.Host, err)
	}
	c.APIHost, c.APIPort = u.Hostname(), u.Port()
	if c.Clientset, err = kubernetes.NewForConfig(cp.Config); err != nil {
		return fmt.Errorf("cluster: clientset: %w", err)
	}
	// The serving CA: what pods find in the kube-root-ca.crt ConfigMap (the controller
	// manager publishes it) to verify the API server.
	if err := os.WriteFile(c.path("ca.crt"), cp.Config.CAData, 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// kubeconfig writes a kubeconfig for a user of the given groups to name.kubeconfig.
func (c *Cluster) kubeconfig(name, user string, groups ...string) (string, error) {
	u, err := c.Env.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		return "", fmt.Errorf("cluster: user %s: %w", user, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("cluster: kubeconfig of %s: %w", user, err)
	}
	p := c.path(name + ".kubeconfig")
	if err := os.WriteFile(p, kc, 0o600); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	return p, nil
}

func (c *Cluster) start(name, bin string, args ...string) error {
	p := &harness.Process{Name: name, Path: bin, Args: args, Dir: c.dir, LogPath: c.path("logs", name+".log")}
	if err := p.Start(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	c.procs = append(c.procs, p)
	return nil
}

func (c *Cluster) startContainerd(ctx context.Context, images []string) error {
	c.ctrSock = c.path("containerd", "containerd.sock")
	for _, d := range []string{"containerd", "cni", "logs"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if err := os.WriteFile(c.path("cni", "10-rollkeeper.conflist"), []byte(cniConfig(c.dir)), 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	cfg := c.path("containerd", "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(c.dir, c.ctrSock)), 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	bin, _ := exec.LookPath("containerd")
	if err := c.start("containerd", bin, "--config", cfg); err != nil {
		return err
	}
	err := harness.WaitFor(ctx, 30*time.Second, "containerd to serve "+c.ctrSock, func(ctx context.Context) (bool, error) {
		if c.procs[len(c.procs)-1].ExitErr() != nil || !c.procs[len(c.procs)-1].Running() {
			return false, harness.Permanent(fmt.Errorf("containerd exited:\n%s", c.procs[len(c.procs)-1].Tail(3000)))
		}
		_, err := c.ctr(ctx, "version")
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	for _, img := range images {
		if out, err := c.ctr(ctx, "images", "import", img); err != nil {
			return fmt.Errorf("cluster: import %s: %w\n%s", img, err, out)
		}
	}
	out, err := c.ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return fmt.Errorf("cluster: list images: %w", err)
	}
	if !strings.Contains(out, SandboxImage) {
		return fmt.Errorf("cluster: the sandbox image %s is not among the imported images:\n%s", SandboxImage, out)
	}
	return nil
}

// ctr runs containerd's CLI against this cluster's containerd, in the CRI namespace.
func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.ctrSock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (c *Cluster) startControllers(binDir string) error {
	// The controller manager runs every controller under its own identity
	// (--use-service-account-credentials=false), which needs more than the bootstrap role of
	// system:kube-controller-manager grants: a test cluster makes it an admin.
	cmKC, err := c.kubeconfig("controller-manager", "system:kube-controller-manager", "system:masters")
	if err != nil {
		return err
	}
	schedKC, err := c.kubeconfig("scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	if err := c.start("kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"),
		"--kubeconfig="+cmKC,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--root-ca-file="+c.path("ca.crt"),
		"--cluster-name=rollkeeper-test",
		"--controllers=*,-csrsigning,-csrapproving,-csrcleaner",
	); err != nil {
		return err
	}
	return c.start("kube-scheduler", filepath.Join(binDir, "kube-scheduler"),
		"--kubeconfig="+schedKC,
		"--leader-elect=false",
		"--secure-port=0",
	)
}

func (c *Cluster) startKubelet(binDir string) error {
	kc, err := c.kubeconfig("kubelet", "system:node:"+c.NodeName, "system:nodes")
	if err != nil {
		return err
	}
	ports, err := zkserver.FreePorts(2)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	for _, d := range []string{"kubelet", "pod-logs"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	cfg := c.path("kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(kubeletConfig(c.dir, c.ctrSock, ports[0], ports[1])), 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return c.start("kubelet", filepath.Join(binDir, "kubelet"),
		"--config="+cfg,
		"--kubeconfig="+kc,
		"--root-dir="+c.path("kubelet"),
		"--cert-dir="+c.path("kubelet", "pki"),
		"--hostname-override="+c.NodeName,
		"--v=1",
	)
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	var last *corev1.Node
	err := harness.WaitFor(ctx, 2*time.Minute, "node "+c.NodeName+" Ready", func(ctx context.Context) (bool, error) {
		for _, p := range c.procs {
			if !p.Running() {
				return false, harness.Permanent(fmt.Errorf("%s exited:\n%s", p.Name, p.Tail(4000)))
			}
		}
		n, err := c.Clientset.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = n
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				c.NodeIP = a.Address
			}
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return c.NodeIP != "", nil
			}
		}
		return false, nil
	})
	if err != nil {
		msg := ""
		if last != nil {
			for _, cond := range last.Status.Conditions {
				msg += fmt.Sprintf("\n  %s=%s %s: %s", cond.Type, cond.Status, cond.Reason, cond.Message)
			}
		}
		return fmt.Errorf("cluster: %w%s\nkubelet log:\n%s", err, msg, c.Process("kubelet").Tail(4000))
	}
	return nil
}

// Process returns the named component (containerd, kubelet, kube-controller-manager,
// kube-scheduler), or nil.
func (c *Cluster) Process(name string) *harness.Process {
	for _, p := range c.procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Diagnose returns what helps explain a failure: the tails of the components' logs and of
// every container log on the node.
func (c *Cluster) Diagnose() string {
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "----- %s (%s) -----\n%s\n", p.Name, p.LogPath, p.Tail(3000))
	}
	_ = filepath.WalkDir(c.path("pod-logs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".log") {
			b.WriteString("----- container log " + strings.TrimPrefix(p, c.path("pod-logs")) + " -----\n")
			b.WriteString(tailFile(p, 3000) + "\n")
		}
		return nil
	})
	return b.String()
}

func tailFile(p string, n int) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// Stop tears everything down, in order: pods (so kubelet stops their containers), kubelet and
// the controllers, leftover containers, containerd, mounts, network namespaces and cgroups,
// the control plane, then restores the sysctls kubelet changed. It goes on after errors and
// returns them all.
func (c *Cluster) Stop() error {
	if c == nil {
		return nil
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if c.Process("kubelet") != nil && c.Process("kubelet").Running() && c.Clientset != nil {
		if err := c.deleteAllPods(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Reverse start order: kubelet, scheduler, controller manager, then (after the
	// containers) containerd.
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		if p.Name == "containerd" {
			if err := c.removeContainers(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		// kube-scheduler and kube-controller-manager exit 1 on SIGTERM without leader
		// election ("finished without leader elect"): only a kill counts as a failure.
		if err := p.Stop(20 * time.Second); err != nil && (p.Name == "containerd" || p.Name == "kubelet" || p.Running()) {
			errs = append(errs, fmt.Errorf("cluster: %w", err))
		}
	}
	if err := cleanupHost(c.dir, c.netnsPre, c.logf); err != nil {
		errs = append(errs, err)
	}
	if c.chains != nil {
		if err := removeKubeChains(c.chains); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.ControlPlane.Stop(); err != nil {
		errs = append(errs, err)
	}
	if c.sysctls != nil {
		if err := writeSysctls(c.sysctls); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmarkRun(c.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteAllPods deletes every pod with no grace period and waits until the API server has
// none left: kubelet confirms each deletion only after it stopped the pod's containers. What
// owns the pods is deleted first so nothing recreates them.
func (c *Cluster) deleteAllPods(ctx context.Context) error {
	cs := c.Clientset
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("cluster: teardown: %w", err)
	}
	zero := int64(0)
	del := metav1.DeleteOptions{GracePeriodSeconds: &zero}
	for _, ns := range nss.Items {
		n := ns.Name
		_ = cs.AppsV1().DaemonSets(n).DeleteCollection(ctx, del, metav1.ListOptions{})
		_ = cs.AppsV1().Deployments(n).DeleteCollection(ctx, del, metav1.ListOptions{})
		_ = cs.AppsV1().ReplicaSets(n).DeleteCollection(ctx, del, metav1.ListOptions{})
		_ = cs.AppsV1().StatefulSets(n).DeleteCollection(ctx, del, metav1.ListOptions{})
		_ = cs.CoreV1().Pods(n).DeleteCollection(ctx, del, metav1.ListOptions{})
	}
	err = harness.WaitFor(ctx, 90*time.Second, "every pod gone", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("cluster: teardown: %w", err)
	}
	return nil
}

// removeContainers kills and deletes whatever containers kubelet left (a failed teardown, a
// crashed kubelet), so no shim or container process outlives the cluster.
func (c *Cluster) removeContainers(ctx context.Context) error {
	out, err := c.ctr(ctx, "containers", "ls", "-q")
	if err != nil {
		return fmt.Errorf("cluster: teardown: %w", err)
	}
	var errs []error
	for _, id := range strings.Fields(out) {
		// Usually exited containers kubelet had not garbage-collected yet.
		c.logf("cluster: teardown: removing container %s", id)
		_, _ = c.ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
		_, _ = c.ctr(ctx, "tasks", "delete", "--force", id)
		if _, err := c.ctr(ctx, "containers", "delete", id); err != nil {
			errs = append(errs, fmt.Errorf("cluster: teardown: %w", err))
		}
	}
	return errors.Join(errs...)
}

func readSysctls() (map[string]string, error) {
	m := map[string]string{}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("cluster: read sysctl %s: %w", k, err)
		}
		m[k] = strings.TrimSpace(string(b))
	}
	return m, nil
}

func writeSysctls(m map[string]string) error {
	var errs []error
	for k, v := range m {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err == nil && strings.TrimSpace(string(b)) == v {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("cluster: restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}

// KubeChains returns the KUBE-* iptables chains that existed before Start ("family/table" to
// chains); Stop removes the others.
func (c *Cluster) KubeChains() map[string][]string { return c.chains }

// Sysctls returns the sysctls Stop restores and the values it restores them to.
func (c *Cluster) Sysctls() map[string]string {
	m := map[string]string{}
	for k, v := range c.sysctls {
		m[k] = v
	}
	return m
}
