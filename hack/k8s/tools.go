//go:build tools

// Package k8s pins the Kubernetes binaries the tests build from source: the API server for
// envtest, and the rest of a single-node cluster (test/cluster) for the real-cluster e2e.
package k8s

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
