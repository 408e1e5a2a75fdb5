package cluster

import (
	"fmt"
	"path/filepath"
)

// containerdConfig is containerd 1.6's configuration (version 2) with every path under dir:
// the node's containerd shares nothing with one the host may run.
func containerdConfig(dir, sock string) string {
	p := func(elem ...string) string { return filepath.Join(append([]string{dir}, elem...)...) }
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  # No registry is reachable: the sandbox image is imported from an archive (make images).
  sandbox_image = %q
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF" (runc cannot lower oom_score_adj).
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  # Only for kubelet's network readiness: the chart's pods use the host network.
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, p("containerd", "root"), p("containerd", "state"), sock, p("containerd", "ttrpc.sock"),
		SandboxImage, p("containerd", "runc"), p("cni"))
}

// cniConfig is a bridge network kubelet sees as ready. No test pod uses it (all run on the
// host network), so no bridge is ever created.
func cniConfig(dir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "rollkeeper-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "rk-cni0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.77.0/24"}]],
        "dataDir": %q
      }
    }
  ]
}
`, filepath.Join(dir, "cni-ipam"))
}

// kubeletConfig is the kubelet's configuration for this machine: a hybrid cgroup v1 host
// (failCgroupV1: false) with swap (failSwapOn: false), cgroupfs (no systemd here), its API on
// loopback ports, and eviction and image garbage collection that a busy shared disk does not
// trigger.
func kubeletConfig(dir, sock string, port, healthzPort int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
podLogsDir: %s
staticPodPath: ""
registerNode: true
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
serializeImagePulls: false
syncFrequency: 10s
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, sock, port, healthzPort, filepath.Join(dir, "pod-logs"))
}
