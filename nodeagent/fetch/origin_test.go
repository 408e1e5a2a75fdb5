package fetch

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// The origin flag goes through ZooKeeper: a seeder registered as the swarm's origin uploads about
// one copy to four rate-limited fetchers that learn of it, and of each other, from the tracker, and
// nothing to a fifth that fetches once they are complete (they registered as complete peers). A
// functional check of where the bytes come from, not a timing (make bench-distribution measures
// time). Registered without the flag, the seeder is one peer among others: it sent 1.5 copies and
// more, and a share of the late fetch.
func TestP2PFetchTakesAboutOneCopyFromTheOrigin(t *testing.T) {
	const (
		size = 8 << 20
		rate = 4 << 20
		n    = 4
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tr := startTracker(t, ctx)
	file, sum := randomArtifact(t, size)
	mi, st, _ := startSeeder(t, ctx, tr, file, p2p.Config{UploadRate: rate, OriginSeeding: true}, true)
	rel := &zklayout.Release{Service: "a", Version: "v2", Artifact: zklayout.Artifact{URL: "http://origin.invalid/artifact.bin", SHA256: sum, Unpack: zklayout.UnpackNone}}
	fetch := func(i int) <-chan error {
		state := t.TempDir()
		host := fmt.Sprintf("127.0.0.%d", i+2)
		cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(state, "torrent"), ListenHost: host, UploadRate: rate, DownloadRate: rate, Logger: testr.New(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		f := NewP2P(P2PConfig{Client: cl, Tracker: tr, Node: fmt.Sprintf("node-%d", i), Host: host,
			DataDir: filepath.Join(state, "torrent", "data"), Logger: testr.New(t)})
		t.Cleanup(f.Close) // the fetchers keep seeding until the test ends, as agents do
		done := make(chan error, 1)
		go func() { done <- f.Fetch(ctx, rel, filepath.Join(state, "v2")) }()
		return done
	}
	var fetches []<-chan error
	for i := range n {
		fetches = append(fetches, fetch(i))
	}
	for i, done := range fetches {
		if err := <-done; err != nil {
			t.Fatalf("node-%d: %v", i, err)
		}
	}
	sent := st.Stats().BytesWrittenData
	t.Logf("%d fetchers: the origin sent %.2f copies", n, float64(sent)/size)
	// About one copy: a collision of two fetchers on one piece, or a chunk in flight when its
	// piece turned up elsewhere, adds well under a quarter.
	if sent > size*5/4 {
		t.Errorf("the origin sent %d bytes for a %d-byte artifact (%.2f copies), want about one", sent, size, float64(sent)/size)
	}

	if err := <-fetch(n); err != nil {
		t.Fatalf("late fetcher: %v", err)
	}
	late := st.Stats().BytesWrittenData - sent
	t.Logf("late fetcher: %d bytes from the origin", late)
	// None, but for a chunk or two the origin may send before the fetcher has its peers'
	// bitfields.
	if late > mi.PieceLength {
		t.Errorf("a fetcher joining a complete swarm took %d bytes from the origin, want none (at most one piece, %d)", late, mi.PieceLength)
	}
}
