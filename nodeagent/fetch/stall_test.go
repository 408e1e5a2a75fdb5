package fetch

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// A download that gets nothing (no peer, no web seed) says so in the agent's log, with the
// torrent client's status: a stalled node explains itself.
func TestP2PFetchReportsAStall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := startTracker(t, ctx)
	file, sum := randomArtifact(t, 1<<20)
	mi, err := p2p.BuildMetaInfo(ctx, file, "artifact.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(ctx, zklayout.Torrent{Service: "a", Version: "v2", InfoHash: mi.InfoHash, Size: mi.Size, PieceLength: mi.PieceLength}, mi.Bytes); err != nil {
		t.Fatal(err)
	}
	cl, err := p2p.New(p2p.Config{DataDir: t.TempDir(), ListenHost: "127.0.0.2", Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	stalled := make(chan string, 1)
	log := funcr.New(func(prefix, args string) {
		if strings.Contains(args, "download stalled") {
			select {
			case stalled <- args:
			default:
			}
		}
	}, funcr.Options{})
	fetcher := NewP2P(P2PConfig{Client: cl, Tracker: tr, Node: "node-1", Host: "127.0.0.2", DataDir: t.TempDir(),
		ProgressEvery: 10 * time.Millisecond, StallReport: 50 * time.Millisecond, Logger: log})
	defer fetcher.Close()
	rel := &zklayout.Release{Service: "a", Version: "v2", Artifact: zklayout.Artifact{URL: "http://origin.invalid/artifact.bin", SHA256: sum, Unpack: zklayout.UnpackNone}}
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fetcher.Fetch(fctx, rel, filepath.Join(t.TempDir(), "installed")) }()
	select {
	case msg := <-stalled:
		for _, want := range []string{`"service"="a"`, `"version"="v2"`, `"peers"=0`, "clientStatus", mi.InfoHash} {
			if !strings.Contains(msg, want) {
				t.Errorf("stall report lacks %s: %s", want, msg)
			}
		}
	case err := <-done:
		t.Fatalf("fetch with no source ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no stall report")
	}
	fcancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled fetch with no source succeeded")
	}
}
