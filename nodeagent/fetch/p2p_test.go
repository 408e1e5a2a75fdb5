package fetch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// An agent stopped mid-download (its context cancelled, its client closed) resumes on restart
// from the same state dir without fetching its verified pieces again.
func TestP2PFetchResumesAfterRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := startTracker(t, ctx)

	// The origin: a seeder limited to 2 MiB/s, so the download can be interrupted.
	file, sum := randomArtifact(t, 8<<20)
	mi, _, _ := startSeeder(t, ctx, tr, file, p2p.Config{UploadRate: 2 << 20}, false)
	rel := &zklayout.Release{Service: "a", Version: "v2", Artifact: zklayout.Artifact{URL: "http://origin.invalid/artifact.bin", SHA256: sum, Unpack: zklayout.UnpackNone}}
	state := t.TempDir()
	newFetcher := func() (*P2P, *p2p.Client) {
		cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(state, "torrent"), ListenHost: "127.0.0.2", Logger: testr.New(t)})
		if err != nil {
			t.Fatal(err)
		}
		return NewP2P(P2PConfig{Client: cl, Tracker: tr, Node: "node-1", Host: "127.0.0.2",
			DataDir: filepath.Join(state, "torrent", "data"), ProgressEvery: 100 * time.Millisecond, Logger: testr.New(t)}), cl
	}

	// First run: stop once a quarter is verified.
	f1, cl1 := newFetcher()
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f1.Fetch(fctx, rel, filepath.Join(state, "v2")) }()
	var before int64
	deadline := time.Now().Add(time.Minute)
	for before < mi.Size/4 {
		data, _, err := tr.ZK.Get(ctx, tr.Layout.ProgressNode("a", "node-1"))
		var p zklayout.Progress
		if err == nil && zklayout.Decode(data, &p) == nil {
			before = p.Done
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress reported: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted fetch returned %v", err)
	}
	f1.Close()
	if err := cl1.Close(); err != nil {
		t.Fatal(err)
	}

	// Second run, same state dir: completes, fetching only what was missing.
	f2, cl2 := newFetcher()
	defer cl2.Close()
	defer f2.Close()
	if err := f2.Fetch(ctx, rel, filepath.Join(state, "v2")); err != nil {
		t.Fatal(err)
	}
	st, ok := f2.Stats(mi.InfoHash)
	if !ok {
		t.Fatal("no stats for the torrent")
	}
	t.Logf("verified before the restart: %d of %d bytes; fetched after it: %d", before, mi.Size, st.BytesReadUsefulData)
	if limit := mi.Size - before + mi.PieceLength; st.BytesReadUsefulData > limit {
		t.Fatalf("fetched %d bytes after the restart, more than the %d missing (+1 piece)", st.BytesReadUsefulData, mi.Size-before)
	}
	if got, err := artifact.FileDigest(filepath.Join(state, "v2", "artifact.bin")); err != nil || got != sum {
		t.Fatalf("installed artifact sha256 %s, %v; want %s", got, err, sum)
	}

	// The downloaded data is corrupted on disk after its pieces were verified (a bad disk, the
	// chaos campaign's seed 10): the next fetch fails its sha256 check, and the one after it
	// fetches the damaged pieces again instead of trusting the old verification for ever.
	data := filepath.Join(state, "torrent", "data", mi.InfoHash, "artifact.bin")
	df, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := df.WriteAt(make([]byte, 4096), mi.Size/2); err != nil {
		t.Fatal(err)
	}
	df.Close()
	if err := f2.Fetch(ctx, rel, filepath.Join(state, "v2-again")); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("fetch over corrupted data returned %v, want a sha256 mismatch", err)
	}
	if err := f2.Fetch(ctx, rel, filepath.Join(state, "v2-healed")); err != nil {
		t.Fatalf("fetch after a sha256 mismatch: %v", err)
	}
	if got, err := artifact.FileDigest(filepath.Join(state, "v2-healed", "artifact.bin")); err != nil || got != sum {
		t.Fatalf("healed artifact sha256 %s, %v; want %s", got, err, sum)
	}
}
