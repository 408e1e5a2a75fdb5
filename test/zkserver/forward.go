// Package zkserver runs real ZooKeeper servers (Debian's zookeeper package) on free loopback
// ports in temporary directories, for tests. It forwards internal/localstack/zkserver, where
// the code lives so that the demo (cmd/demo) links no test package; the types are aliases, so
// values pass freely between the two.
package zkserver

import (
	"context"

	"github.com/rollkeeper/rollkeeper/internal/localstack/zkserver"
)

type (
	Ensemble = zkserver.Ensemble
	Options  = zkserver.Options
	PKI      = zkserver.PKI
	Server   = zkserver.Server
	TLS      = zkserver.TLS
)

const (
	ClassPath = zkserver.ClassPath
)

// FourLetter is zkserver.FourLetter.
func FourLetter(addr, cmd string) (string, error) {
	return zkserver.FourLetter(addr, cmd)
}

// FreePorts is zkserver.FreePorts.
func FreePorts(n int) ([]int, error) {
	return zkserver.FreePorts(n)
}

// PortLockDir is zkserver.PortLockDir.
func PortLockDir() string {
	return zkserver.PortLockDir()
}

// Start is zkserver.Start.
func Start(ctx context.Context, dir string, n int) (*Ensemble, error) {
	return zkserver.Start(ctx, dir, n)
}

// StartWith is zkserver.StartWith.
func StartWith(ctx context.Context, dir string, n int, opts Options) (*Ensemble, error) {
	return zkserver.StartWith(ctx, dir, n, opts)
}

// WritePKI is zkserver.WritePKI.
func WritePKI(dir string) (PKI, error) {
	return zkserver.WritePKI(dir)
}
