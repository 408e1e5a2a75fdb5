package fetch

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Agents' clients accept only the peers registered in the version's swarm (ZooKeeper): node-2,
// registered, downloads from node-1 once the origin's seeder is gone; a client that is not
// registered is refused by node-1 and receives nothing.
func TestP2PServesOnlyRegisteredPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := startTracker(t, ctx)

	dir := t.TempDir()
	file, sum := randomArtifact(t, 2<<20)
	mi, seedT, unregister := startSeeder(t, ctx, tr, file, p2p.Config{DataDir: filepath.Join(dir, "seeder")}, false)
	rel := &zklayout.Release{Service: "a", Version: "v2", Artifact: zklayout.Artifact{URL: "http://origin.invalid/artifact.bin", SHA256: sum, Unpack: zklayout.UnpackNone}}
	node := func(name, host string) (*P2P, *p2p.Client, string) {
		state := t.TempDir()
		cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(state, "torrent"), ListenHost: host, OnlyListedPeers: true, Logger: testr.New(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		fe := NewP2P(P2PConfig{Client: cl, Tracker: tr, Node: name, Host: host,
			DataDir: filepath.Join(state, "torrent", "data"), ProgressEvery: 100 * time.Millisecond, Logger: testr.New(t)})
		t.Cleanup(fe.Close)
		return fe, cl, state
	}

	n1, cl1, _ := node("node-1", "127.0.0.2")
	if err := n1.Fetch(ctx, rel, filepath.Join(t.TempDir(), "v2")); err != nil {
		t.Fatal(err)
	}
	// The origin leaves: node-2 can only get the bytes from node-1.
	if err := unregister(ctx); err != nil {
		t.Fatal(err)
	}
	seedT.Drop()
	n2, _, state2 := node("node-2", "127.0.0.3")
	if err := n2.Fetch(ctx, rel, filepath.Join(state2, "v2")); err != nil {
		t.Fatal(err)
	}
	if got, err := artifact.FileDigest(filepath.Join(state2, "v2", "artifact.bin")); err != nil || got != sum {
		t.Fatalf("node-2 installed sha256 %s, %v; want %s", got, err, sum)
	}
	if st, _ := n1.Stats(mi.InfoHash); st.BytesWrittenData == 0 {
		t.Fatalf("node-1 uploaded nothing: %+v", st)
	}
	// node-1 was complete when node-2 joined: it did not read the peer set on the join, and
	// learned of node-2 from node-2's refused connection (then dialed it).
	if cl1.RefusedConns() == 0 {
		t.Fatal("node-1 refused nothing: it listed node-2 before node-2 knocked, so it read the peer set on the join")
	}

	// Not registered: refused.
	stranger, err := p2p.New(p2p.Config{DataDir: t.TempDir(), ListenHost: "127.0.0.4", Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	refused := cl1.RefusedConns()
	st, err := stranger.Download(ctx, mi, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddPeers([]p2p.Peer{{Addr: cl1.Addr()}}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := cl1.WaitRefused(wctx, refused); err != nil {
		t.Fatalf("node-1 refused no connection from the unregistered client: %v", err)
	}
	if s := st.Stats(); s.BytesReadData != 0 || s.PiecesDone != 0 {
		t.Fatalf("unregistered client received data: %+v", s)
	}
}
