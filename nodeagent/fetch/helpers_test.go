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
