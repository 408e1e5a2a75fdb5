package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/seeder"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

type seederParts struct {
	*seeder.Seeder
	client *p2p.Client
}

func (s seederParts) close() { _ = s.client.Close() }

// newSeeder builds the torrent client and the seeder from the flags.
func newSeeder(cfg config, zk *zkclient.Client, layout zklayout.Layout, onChange func(string)) (seederParts, error) {
	host := cfg.P2PHost
	if host == "" {
		host = os.Getenv("POD_IP")
	}
	if host == "" {
		host = firstAddress()
	}
	if err := os.MkdirAll(cfg.SeederDir, 0o755); err != nil {
		return seederParts{}, fmt.Errorf("--seeder-dir: %w", err)
	}
	cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(cfg.SeederDir, "client"), ListenHost: host, ListenPort: cfg.P2PPort,
		UploadRate: cfg.UploadRate, Logger: ctrl.Log.WithName("p2p")})
	if err != nil {
		return seederParts{}, fmt.Errorf("torrent client on %s:%d (--p2p-host, --p2p-port): %w", host, cfg.P2PPort, err)
	}
	name, _ := os.Hostname()
	sd := seeder.New(seeder.Config{Client: cl, Tracker: tracker.Tracker{ZK: zk, Layout: layout},
		Dir: filepath.Join(cfg.SeederDir, "artifacts"), Name: "origin-" + name, Host: host,
		OnChange: onChange, Logger: ctrl.Log.WithName("seeder")})
	return seederParts{Seeder: sd, client: cl}, nil
}

func firstAddress() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
