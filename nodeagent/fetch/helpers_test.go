package fetch

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// startTracker starts a ZooKeeper server and returns a tracker on a session to it; both end
// with the test.
func startTracker(t *testing.T, ctx context.Context) tracker.Tracker {
	t.Helper()
	zk, err := zkserver.Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(zk.Stop)
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(zk.Connect()), Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return tracker.Tracker{ZK: c, Layout: zklayout.MustNew("/rk")}
}

// randomArtifact writes size random bytes to a file named artifact.bin and returns its path
// and sha256.
func randomArtifact(t *testing.T, size int64) (string, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "artifact.bin")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sum, err := artifact.FileDigest(file)
	if err != nil {
		t.Fatal(err)
	}
	return file, sum
}

// startSeeder starts a seeder of file (its client from cfg, listening on 127.0.0.1, closed with
// the test), publishes the torrent as a/v2 and registers the seeder in the swarm as origin if
// asked (complete in any case). It returns the metainfo, the seeded torrent and the registration's
// removal.
func startSeeder(t *testing.T, ctx context.Context, tr tracker.Tracker, file string, cfg p2p.Config, origin bool) (p2p.MetaInfo, *p2p.Torrent, func(context.Context) error) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "seeder")
	}
	cfg.ListenHost, cfg.Logger = "127.0.0.1", testr.New(t)
	seed, err := p2p.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seed.Close() })
	mi, err := p2p.BuildMetaInfo(ctx, file, "artifact.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(ctx, zklayout.Torrent{Service: "a", Version: "v2", InfoHash: mi.InfoHash, Size: mi.Size, PieceLength: mi.PieceLength}, mi.Bytes); err != nil {
		t.Fatal(err)
	}
	st, err := seed.Seed(ctx, mi, file)
	if err != nil {
		t.Fatal(err)
	}
	unregister, err := tr.Register(ctx, mi.InfoHash, zklayout.Peer{Node: "origin", Host: "127.0.0.1", Port: seed.ListenPort(), Complete: true, Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	return mi, st, unregister
}
