package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// A version whose torrent never appears (the operator died before its seeder published it) is
// fetched from the origin once TorrentWait has passed: the node reports its download with no
// peers, verifies the sha256 and installs it.
func TestP2PFetchFallsBackToTheOrigin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := startTracker(t, ctx)

	body := []byte(strings.Repeat("0123456789abcdef", 64<<10)) // 1 MiB
	digest := sha256.Sum256(body)
	sum := hex.EncodeToString(digest[:])
	half := len(body) / 2
	release := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		_, _ = w.Write(body[:half])
		w.(http.Flusher).Flush()
		// The rest only once the test saw the progress of the first half.
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(body[half:])
	}))
	defer origin.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	state := t.TempDir()
	cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(state, "torrent"), ListenHost: "127.0.0.2", Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	f := NewP2P(P2PConfig{Client: cl, Tracker: tr, Node: "node-1", Host: "127.0.0.2", DataDir: filepath.Join(state, "torrent", "data"),
		ProgressEvery: 20 * time.Millisecond, TorrentWait: 300 * time.Millisecond, Logger: testr.New(t)})
	defer f.Close()

	rel := &zklayout.Release{Service: "a", Version: "v2", Artifact: zklayout.Artifact{URL: origin.URL + "/a.bin", SHA256: sum, Unpack: zklayout.UnpackNone}}
	done := make(chan error, 1)
	go func() { done <- f.Fetch(ctx, rel, filepath.Join(state, "v2")) }()

	// Poll the progress znode (a data change is not a child event) until it shows the first half.
	for seen := false; !seen; {
		data, _, err := tr.ZK.Get(ctx, tr.Layout.ProgressNode("a", "node-1"))
		var p zklayout.Progress
		if err == nil && zklayout.Decode(data, &p) == nil {
			if p.Peers != 0 || p.Total != int64(len(body)) || p.Version != "v2" || p.Source != zklayout.ProgressSourceOrigin {
				t.Fatalf("progress %+v: want v2 from the origin (no peers) of %d bytes", p, len(body))
			}
			seen = p.Done >= int64(half)
		} else if !errors.Is(err, zkclient.ErrNoNode) && err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("fetch ended before the origin sent everything: %v", err)
		case <-ctx.Done():
			t.Fatalf("no progress of the first half reported: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("fetch from the origin: %v", err)
	}
	if got, err := artifact.FileDigest(filepath.Join(state, "v2", "a.bin")); err != nil || got != sum {
		t.Fatalf("installed artifact sha256 %s, %v; want %s", got, err, sum)
	}
	if ok, err := tr.ZK.Exists(ctx, tr.Layout.ProgressNode("a", "node-1")); err != nil || ok {
		t.Fatalf("progress znode left behind (%v)", err)
	}

	// Bytes that do not match: an error saying so, without the digest of what was served.
	bad := &zklayout.Release{Service: "a", Version: "v3", Artifact: zklayout.Artifact{URL: origin.URL + "/a.bin", SHA256: strings.Repeat("ab", 32), Unpack: zklayout.UnpackNone}}
	err = f.Fetch(ctx, bad, filepath.Join(state, "v3"))
	if !errors.Is(err, artifact.ErrDigestMismatch) || strings.Contains(err.Error(), sum) {
		t.Fatalf("mismatching origin: %v; want %v without the computed digest", err, artifact.ErrDigestMismatch)
	}
	if _, err := os.Stat(filepath.Join(state, "v3")); !os.IsNotExist(err) {
		t.Fatalf("a mismatching artifact was installed (%v)", err)
	}
}
