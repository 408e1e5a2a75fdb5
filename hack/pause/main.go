// Command pause is the sandbox ("pause") container of the real-cluster e2e (test/cluster): no
// registry is reachable here, so containerd's sandbox image is built from this binary
// (hack/pause/Dockerfile, make images). Like registry.k8s.io/pause it holds the pod's
// namespaces open and exits on SIGINT or SIGTERM; as PID 1 of a pod it reaps orphans.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		// Reap every exited child; processes of the pod re-parented to us would linger as
		// zombies otherwise.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
