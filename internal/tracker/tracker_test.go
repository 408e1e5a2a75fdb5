package tracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

func setup(t *testing.T) (Tracker, context.Context) {
	t.Helper()
	tr, ctx, _ := setupEnsemble(t)
	return tr, ctx
}

func setupEnsemble(t *testing.T) (Tracker, context.Context, *zkserver.Ensemble) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	e, err := zkserver.Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(e.Connect()), Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return Tracker{ZK: c, Layout: zklayout.MustNew("/rk")}, ctx, e
}

func TestPublishAndReadChunkedMetainfo(t *testing.T) {
	tr, ctx := setup(t)
	if _, _, err := tr.Read(ctx, "a", "v1"); !errors.Is(err, ErrNotPublished) {
		t.Fatalf("read before publish: %v", err)
	}
	meta := bytes.Repeat([]byte("0123456789abcdef"), 90_000) // 1.4 MiB: three chunks
	tor := zklayout.Torrent{Service: "a", Version: "v1", InfoHash: strings.Repeat("ab", 20), Size: 1 << 30, PieceLength: 1 << 20}
	if err := tr.Publish(ctx, tor, meta); err != nil {
		t.Fatal(err)
	}
	got, gotMeta, err := tr.Read(ctx, "a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Chunks != 3 || !bytes.Equal(gotMeta, meta) {
		t.Fatalf("read back %d chunks, %d bytes", got.Chunks, len(gotMeta))
	}
	if err := tr.Publish(ctx, tor, meta); err != nil {
		t.Fatalf("republishing the same torrent: %v", err)
	}
	other := tor
	other.InfoHash = strings.Repeat("cd", 20)
	if err := tr.Publish(ctx, other, meta); err == nil {
		t.Fatal("a second infohash for the same version was accepted")
	}
	// A chunk gone missing is a clear error, not a short metainfo.
	if err := tr.ZK.Delete(ctx, tr.Layout.TorrentChunk("a", "v1", 2), -1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.Read(ctx, "a", "v1"); err == nil {
		t.Fatal("read with a missing chunk succeeded")
	}
}

func TestRegisterAndFollow(t *testing.T) {
	tr, ctx := setup(t)
	ih := strings.Repeat("ef", 20)
	var mu sync.Mutex
	got := map[string]zklayout.Peer{}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- tr.Follow(fctx, ih, "self", func(ps []zklayout.Peer) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range ps {
				got[p.Node] = p
			}
		})
	}()
	for _, n := range []string{"self", "n1", "n2"} {
		if _, err := tr.Register(ctx, ih, zklayout.Peer{Node: n, Host: "127.0.0.1", Port: 7000}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		_, selfSeen := got["self"]
		mu.Unlock()
		if selfSeen {
			t.Fatal("Follow reported the node itself")
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("followed peers: %v", got)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow ended with %v", err)
	}
}

// FollowChanges reports joins and leaves (never self), and a node that comes back as a join.
func TestFollowChangesReportsLeaves(t *testing.T) {
	tr, ctx := setup(t)
	ih := strings.Repeat("cd", 20)
	type change struct {
		joined []string
		left   []string
	}
	changes := make(chan change, 16)
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- tr.FollowChanges(fctx, ih, "self", func(ps []zklayout.Peer) {
			var names []string
			for _, p := range ps {
				names = append(names, p.Node)
			}
			changes <- change{joined: names}
		}, func(names []string) { changes <- change{left: names} })
	}()
	next := func(want string) {
		t.Helper()
		select {
		case c := <-changes:
			if got := fmt.Sprintf("joined %v left %v", c.joined, c.left); got != want {
				t.Fatalf("change %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no change, want %q", want)
		}
	}
	unregSelf, err := tr.Register(ctx, ih, zklayout.Peer{Node: "self", Host: "127.0.0.1", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	unreg1, err := tr.Register(ctx, ih, zklayout.Peer{Node: "n1", Host: "127.0.0.2", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	next("joined [n1] left []")
	if err := unregSelf(ctx); err != nil {
		t.Fatal(err)
	}
	if err := unreg1(ctx); err != nil {
		t.Fatal(err)
	}
	next("joined [] left [n1]")
	if _, err := tr.Register(ctx, ih, zklayout.Peer{Node: "n1", Host: "127.0.0.3", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	next("joined [n1] left []")
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("FollowChanges ended with %v", err)
	}
	select {
	case c := <-changes:
		t.Fatalf("unexpected change %+v", c)
	default:
	}
}

func TestOrderPrefersRackThenZone(t *testing.T) {
	peers := []zklayout.Peer{
		{Node: "far", Zone: "z2", Rack: "r9"},
		{Node: "zone", Zone: "z1", Rack: "r2"},
		{Node: "rack", Zone: "z1", Rack: "r1"},
		{Node: "unknown"},
	}
	var names []string
	for _, p := range Order(Topology{Zone: "z1", Rack: "r1"}, peers) {
		names = append(names, p.Node)
	}
	if strings.Join(names, ",") != "rack,zone,far,unknown" {
		t.Fatalf("order = %v", names)
	}
}

// A summary in ZooKeeper is untrusted: sizes that would make Read allocate without bound (or
// panic in makeslice, as a huge metaSize once did) are refused before any chunk is read, and
// chunks that do not add up to the summary are refused as they arrive.
func TestReadRefusesSummariesThatLie(t *testing.T) {
	tr, ctx := setup(t)
	ih := strings.Repeat("ab", 20)
	summary := func(metaSize, chunks int64) []byte {
		return []byte(fmt.Sprintf(`{"schema":1,"service":"a","version":"v1","infoHash":%q,"size":1048576,"pieceLength":1048576,"chunks":%d,"metaSize":%d}`, ih, chunks, metaSize))
	}
	put := func(version string, data []byte, chunks ...[]byte) {
		t.Helper()
		if err := tr.ZK.EnsurePath(ctx, tr.Layout.TorrentService("a")); err != nil {
			t.Fatal(err)
		}
		if err := tr.ZK.DeleteTree(ctx, tr.Layout.Torrent("a", version)); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.ZK.Create(ctx, tr.Layout.Torrent("a", version), data, zkclient.Persistent); err != nil {
			t.Fatal(err)
		}
		for i, c := range chunks {
			if _, err := tr.ZK.Create(ctx, tr.Layout.TorrentChunk("a", version, i), c, zkclient.Persistent); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name     string
		metaSize int64
		chunks   int64
		data     [][]byte
	}{
		{"metaSize overflows makeslice", 1 << 62, 1 << 43, [][]byte{[]byte("x")}},
		{"metaSize over the bound", zklayout.MaxMetaSize + 1, 17, nil},
		{"metaSize negative", -1, 1, [][]byte{[]byte("x")}},
		{"chunk count disagrees", 40, 3, [][]byte{bytes.Repeat([]byte("x"), 40), nil, nil}},
		{"chunk longer than the summary", 40, 1, [][]byte{bytes.Repeat([]byte("x"), 41)}},
		{"chunk shorter than the summary", 40, 1, [][]byte{[]byte("x")}},
		{"chunk over MetaChunkSize", zklayout.MetaChunkSize + 2, 2, [][]byte{bytes.Repeat([]byte("x"), zklayout.MetaChunkSize+1), []byte("x")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put("v1", summary(tc.metaSize, tc.chunks), tc.data...)
			_, meta, err := tr.Read(ctx, "a", "v1")
			if !errors.Is(err, zklayout.ErrMalformed) {
				t.Fatalf("Read = %d bytes, %v; want ErrMalformed", len(meta), err)
			}
		})
	}
	// The same layout with an honest summary reads back.
	honest := "one piece hash: 20 bytes or more"
	put("v1", summary(int64(len(honest)), 1), []byte(honest))
	if _, meta, err := tr.Read(ctx, "a", "v1"); err != nil || string(meta) != honest {
		t.Fatalf("honest summary: %q, %v", meta, err)
	}
}

func TestAssembleGrowsWithTheChunks(t *testing.T) {
	tor := zklayout.Torrent{MetaSize: zklayout.MetaChunkSize + 1, Chunks: 2}
	reads := 0
	_, err := Assemble(tor, func(i int) ([]byte, error) {
		reads++
		return nil, errors.New("gone")
	})
	if err == nil || reads != 1 {
		t.Fatalf("Assemble with a failing read: %v after %d reads", err, reads)
	}
	meta, err := Assemble(tor, func(i int) ([]byte, error) {
		if i == 0 {
			return make([]byte, zklayout.MetaChunkSize), nil
		}
		return []byte{1}, nil
	})
	if err != nil || len(meta) != tor.MetaSize {
		t.Fatalf("Assemble = %d bytes, %v", len(meta), err)
	}
}

// FollowWhen reads the peer set again only once ready lets it: however many peers join
// meanwhile, the follower gets one event and then one reading of the newcomers.
func TestFollowWhenReadsAgainOnlyWhenReady(t *testing.T) {
	tr, ctx, e := setupEnsemble(t)
	ih := strings.Repeat("cd", 20)
	// The follower's own session, so that its requests and events are counted apart.
	fc, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(e.Connect()), Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	follower := Tracker{ZK: fc, Layout: tr.Layout}
	register := func(n string) {
		t.Helper()
		if _, err := tr.Register(ctx, ih, zklayout.Peer{Node: n, Host: "127.0.0.1", Port: 7000}); err != nil {
			t.Fatal(err)
		}
	}
	register("n00")
	added := make(chan []zklayout.Peer, 16)
	asked, release := make(chan struct{}, 16), make(chan struct{})
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- follower.FollowWhen(fctx, ih, "self", func(ps []zklayout.Peer) { added <- ps }, func(ctx context.Context) error {
			asked <- struct{}{}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	if ps := <-added; len(ps) != 1 || ps[0].Node != "n00" {
		t.Fatalf("first reading: %v", ps)
	}
	register("n01")
	<-asked // the set changed: the follower waits to be ready
	for i := 2; i <= 10; i++ {
		register(fmt.Sprintf("n%02d", i))
	}
	before := fc.Traffic()
	close(release)
	ps := <-added
	if len(ps) != 10 {
		t.Fatalf("after release: %d newcomers in one call, want all 10: %v", len(ps), ps)
	}
	tr2 := fc.Traffic().Sub(before)
	if tr2.Reads != 11 || tr2.Watches != 1 {
		t.Fatalf("one reading of 10 newcomers cost %d reads and %d watches; want 11 (the list, each entry) and 1", tr2.Reads, tr2.Watches)
	}
	if got := fc.Traffic().WatchesFired; got != 1 {
		t.Fatalf("the follower got %d watch events for 11 joins; want 1 (its watch is armed again only when it reads)", got)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("FollowWhen ended with %v", err)
	}
}

// Update rewrites this session's entry with one write, and registers the peer when its entry is
// missing or belongs to another session (an earlier one of the same node, which ends with it).
func TestUpdate(t *testing.T) {
	tr, ctx, e := setupEnsemble(t)
	ih := strings.Repeat("ef", 20)
	read := func() (zklayout.Peer, zkclient.Stat) {
		t.Helper()
		data, st, err := tr.ZK.Get(ctx, tr.Layout.Peer(ih, "n1"))
		if err != nil {
			t.Fatal(err)
		}
		var p zklayout.Peer
		if err := zklayout.Decode(data, &p); err != nil {
			t.Fatal(err)
		}
		return p, st
	}
	mine := tr.ZK.Session().ID

	// Missing: registered.
	if err := tr.Update(ctx, ih, zklayout.Peer{Node: "n1", Host: "127.0.0.2", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	if p, st := read(); p.Complete || st.EphemeralOwner != mine {
		t.Fatalf("after an update of a missing entry: %+v, owner %x (mine %x)", p, st.EphemeralOwner, mine)
	}

	// This session's: one write.
	before := tr.ZK.Traffic()
	if err := tr.Update(ctx, ih, zklayout.Peer{Node: "n1", Host: "127.0.0.2", Port: 7000, Complete: true}); err != nil {
		t.Fatal(err)
	}
	if got := tr.ZK.Traffic().Sub(before); got != (zkclient.Traffic{Writes: 1}) {
		t.Fatalf("update of this session's entry: traffic %+v, want one write", got)
	}
	if p, st := read(); !p.Complete || st.EphemeralOwner != mine {
		t.Fatalf("after an update: %+v, owner %x (mine %x)", p, st.EphemeralOwner, mine)
	}

	// Another session's (the node's earlier one): replaced by ours.
	other, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(e.Connect()), Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := (Tracker{ZK: other, Layout: tr.Layout}).Register(ctx, ih, zklayout.Peer{Node: "n1", Host: "127.0.0.9", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Update(ctx, ih, zklayout.Peer{Node: "n1", Host: "127.0.0.2", Port: 7000, Complete: true}); err != nil {
		t.Fatal(err)
	}
	if p, st := read(); p.Host != "127.0.0.2" || st.EphemeralOwner != mine {
		t.Fatalf("after an update over another session's entry: %+v, owner %x (mine %x)", p, st.EphemeralOwner, mine)
	}
}

// FollowWhenRead calls read after its first reading even when the set holds no other peer (a
// joining node waits for it to register), and after add has what the reading found.
func TestFollowWhenReadSignalsEachReading(t *testing.T) {
	tr, ctx := setup(t)
	ih := strings.Repeat("0a", 20)
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	var added []string
	reads := make(chan []string, 4)
	done := make(chan error, 1)
	go func() {
		done <- tr.FollowWhenRead(fctx, ih, "self", func(ps []zklayout.Peer) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range ps {
				added = append(added, p.Node)
			}
		}, nil, func() {
			mu.Lock()
			defer mu.Unlock()
			reads <- append([]string(nil), added...)
		})
	}()
	select {
	case got := <-reads:
		if len(got) != 0 {
			t.Fatalf("first reading of an empty set added %v", got)
		}
	case err := <-done:
		t.Fatalf("FollowWhenRead ended with %v before its first reading", err)
	}
	if _, err := tr.Register(ctx, ih, zklayout.Peer{Node: "n1", Host: "127.0.0.2", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	if got := <-reads; len(got) != 1 || got[0] != "n1" {
		t.Fatalf("second reading: added %v before read, want [n1]", got)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("FollowWhenRead ended with %v", err)
	}
}
