//go:build tools

// Package k8s pins the Kubernetes control-plane binaries the tests build from source.
package k8s

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
