package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
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
	origins, err := originPolicy(cfg.SeederFileRoots, cfg.SeederAllowOriginCIDRs)
	if err != nil {
		return seederParts{}, err
	}
	log := ctrl.Log.WithName("seeder")
	if len(origins.FileRoots) > 0 {
		log.Info("the seeder may read file:// origins under these directories, and seed them to every node", "--"+seeder.FlagFileRoots, origins.FileRoots)
	}
	if len(origins.AllowCIDRs) > 0 {
		log.Info("WARNING: the seeder may read origins on addresses refused by default (loopback, link-local, metadata) within these prefixes",
			"--"+seeder.FlagAllowOriginCIDRs, cfg.SeederAllowOriginCIDRs)
	}
	if cfg.SeederMaxBytes <= 0 {
		return seederParts{}, fmt.Errorf("--%s=%d: want a positive number of bytes", seeder.FlagMaxBytes, cfg.SeederMaxBytes)
	}
	if err := os.MkdirAll(cfg.SeederDir, 0o755); err != nil {
		return seederParts{}, fmt.Errorf("--seeder-dir: %w", err)
	}
	cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(cfg.SeederDir, "client"), ListenHost: host, ListenPort: cfg.P2PPort,
		UploadRate: cfg.UploadRate, OnlyListedPeers: true, Logger: ctrl.Log.WithName("p2p"),
		// The seeder is the origin's upload: a piece goes to one downloader at a time, and the
		// agents ask it only for what no other peer holds (its swarm entries say Origin).
		OriginSeeding: true})
	if err != nil {
		return seederParts{}, fmt.Errorf("torrent client on %s:%d (--p2p-host, --p2p-port): %w", host, cfg.P2PPort, err)
	}
	name, _ := os.Hostname()
	sd := seeder.New(seeder.Config{Client: cl, Tracker: tracker.Tracker{ZK: zk, Layout: layout},
		Dir: filepath.Join(cfg.SeederDir, "artifacts"), MaxBytes: cfg.SeederMaxBytes, Name: "origin-" + name, Host: host,
		OnChange: onChange, Origins: origins, Logger: ctrl.Log.WithName("seeder")})
	return seederParts{Seeder: sd, client: cl}, nil
}

// Help of the seeder's flags.
const (
	maxBytesHelp = "Budget of the artifacts the seeder keeps under --seeder-dir, in bytes or as a quantity (1536Mi, 20Gi). A new copy that would not fit " +
		"deletes the copies of versions no longer seeded, oldest first; an origin that still does not fit is not read further and " +
		"its version is not published. Keep it below the volume's size."
	fileRootsHelp = "Comma-separated absolute directories the seeder may read file:// artifact URLs from (checked once .. and symlinks are resolved). " +
		"Default: none, so file:// URLs are refused: whatever the operator reads it seeds to every node, and it can read its service-account token."
	allowOriginCIDRsHelp = "OPEN DOOR, explicit opt-in: comma-separated CIDRs (or addresses) the seeder may read HTTP(S) origins on although they are refused by default: " +
		"loopback, link-local (169.254.0.0/16, fe80::/10), unspecified, and the cloud metadata addresses (169.254.169.254, fd00:ec2::254, ...; " +
		"a metadata address only when named exactly, e.g. 169.254.169.254/32). Checked on the address dialed, redirects included. " +
		"Example for a local test origin: 127.0.0.0/8. Default: none."
)

// byteSize is a flag holding a number of bytes, given as an integer or a Kubernetes quantity
// (1536Mi, 20Gi, 1.5G).
type byteSize int64

func (b *byteSize) String() string {
	if b == nil {
		return ""
	}
	return resource.NewQuantity(int64(*b), resource.BinarySI).String()
}

func (b *byteSize) Set(v string) error {
	q, err := resource.ParseQuantity(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("want a number of bytes or a quantity such as 20Gi: %w", err)
	}
	// Value rounds up: compared with the quantity, it tells a fraction of a byte.
	n := q.Value()
	if n <= 0 || q.Cmp(*resource.NewQuantity(n, resource.BinarySI)) != 0 {
		return fmt.Errorf("%q: want a positive whole number of bytes", v)
	}
	*b = byteSize(n)
	return nil
}

// originPolicy parses --seeder-file-roots and --seeder-allow-origin-cidrs.
func originPolicy(fileRoots, cidrs string) (seeder.OriginPolicy, error) {
	var p seeder.OriginPolicy
	for _, r := range strings.Split(fileRoots, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if !filepath.IsAbs(r) {
			return p, fmt.Errorf("--%s: %q is not an absolute directory", seeder.FlagFileRoots, r)
		}
		p.FileRoots = append(p.FileRoots, filepath.Clean(r))
	}
	for _, c := range strings.Split(cidrs, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return p, fmt.Errorf("--%s: %q is neither a CIDR nor an address", seeder.FlagAllowOriginCIDRs, c)
			}
			prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		p.AllowCIDRs = append(p.AllowCIDRs, prefix.Masked())
	}
	return p, nil
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
