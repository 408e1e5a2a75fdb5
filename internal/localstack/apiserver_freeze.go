package localstack

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Freeze stops kube-apiserver (SIGSTOP) without killing it: connections hang, as with an API
// server that is down or cut off; Thaw (SIGCONT) lets it go on where it was. etcd keeps running.
func (cp *ControlPlane) Freeze() error { return cp.signalAPIServer(syscall.SIGSTOP) }

// Thaw resumes an API server Freeze stopped.
func (cp *ControlPlane) Thaw() error { return cp.signalAPIServer(syscall.SIGCONT) }

func (cp *ControlPlane) signalAPIServer(sig syscall.Signal) error {
	pid, err := cp.apiServerPid()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("control plane: signal %v to kube-apiserver (pid %d): %w", sig, pid, err)
	}
	return nil
}

// apiServerPid finds this control plane's kube-apiserver among the processes by its secure port
// (envtest does not expose the process; stacks of parallel tests each have their own port).
func (cp *ControlPlane) apiServerPid() (int, error) {
	if cp == nil || cp.Env == nil || cp.Env.ControlPlane.APIServer == nil {
		return 0, fmt.Errorf("control plane: not started")
	}
	port := cp.Env.ControlPlane.APIServer.SecureServing.Port
	if port == "" {
		return 0, fmt.Errorf("control plane: kube-apiserver's secure port is unknown")
	}
	want := []byte("--secure-port=" + port)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(cmdline, []byte{0})
		if len(args) == 0 || filepath.Base(string(args[0])) != "kube-apiserver" {
			continue
		}
		for _, a := range args[1:] {
			if bytes.Equal(a, want) {
				return strconv.Atoi(filepath.Base(filepath.Dir(p)))
			}
		}
	}
	return 0, fmt.Errorf("control plane: no kube-apiserver process with %s", want)
}
