//go:build tools

// Package kubectl pins kubectl, built from source by `make kubectl` for machines without one.
// It is its own module so that changing it never forces a kube-apiserver rebuild.
package kubectl

import (
	_ "k8s.io/kubernetes/cmd/kubectl"
)
