// rollkeeper's tests of origin-peers.go (not upstream's).

package torrent

import (
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
)

// originSwarm is a seeder's torrent of 100 pieces with downloaders connected for 2 s that
// announced these many pieces each (Have messages).
func originSwarm(haves ...int) (*Torrent, []*PeerConn, time.Time) {
	now := time.Now()
	t := &Torrent{
		originSeeding: true,
		info:          &metainfo.Info{PieceLength: 1 << 18, Length: 100 << 18, Pieces: make([]byte, 20*100)},
		conns:         make(map[*PeerConn]struct{}),
	}
	var pcs []*PeerConn
	for _, h := range haves {
		pc := &PeerConn{haves: h}
		pc.t = t
		pc.completedHandshake = now.Add(-2 * time.Second)
		for i := range h {
			pc._peerPieces.Add(uint32(i))
		}
		t.conns[pc] = struct{}{}
		pcs = append(pcs, pc)
	}
	return t, pcs, now
}

func TestOriginDeferServesASlowPeerLast(t *testing.T) {
	tor, pcs, now := originSwarm(2, 8, 9, 10)
	slow, fast := pcs[0], pcs[1]
	if slow.originDefer(now) {
		t.Fatal("deferred the slow peer with no other peer waiting for the origin")
	}
	fast.readyPeerRequests = map[Request][]byte{{Index: 50}: nil}
	tor.originSlowAt = time.Time{} // the set is cached; this test changes what it derives from
	if !slow.originDefer(now) {
		t.Fatal("the slow peer (2 pieces in 2 s, median 9) was served while a fast one waited")
	}
	if fast.originDefer(now) {
		t.Fatal("deferred a fast peer")
	}
	// A slow peer still gets a quarter of what the median other peer got from the origin.
	for _, pc := range pcs[1:] {
		pc._stats.BytesWrittenData.Add(4 << 20)
	}
	tor.originSlowAt = time.Time{}
	if slow.originDefer(now) {
		t.Fatal("deferred the slow peer before it got a quarter of the others' share")
	}
	slow._stats.BytesWrittenData.Add(1 << 20)
	tor.originSlowAt = time.Time{}
	if !slow.originDefer(now) {
		t.Fatal("the slow peer, with its quarter share, was served while a fast one waited")
	}
	// A request held for another peer (originSkip) is not one the origin could serve now.
	tor.originOwners = map[pieceIndex]originOwner{50: {pcs[2], now}}
	if slow.originDefer(now) {
		t.Fatal("deferred the slow peer for a request the origin holds back anyway")
	}
}

func TestOriginSlowPeers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		haves []int
		slow  []int // indexes into haves
	}{
		{"none slow", []int{8, 9, 10, 11}, nil},
		{"one slow", []int{2, 9, 10, 11}, []int{0}},
		{"too few peers to compare", []int{1, 10}, nil},
		{"complete peers are not compared", []int{100, 100, 1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tor, pcs, now := originSwarm(tc.haves...)
			got := tor.originSlowPeers(now)
			if len(got) != len(tc.slow) {
				t.Fatalf("slow set %d peers, want %v", len(got), tc.slow)
			}
			for _, i := range tc.slow {
				if _, ok := got[pcs[i]]; !ok {
					t.Errorf("peer %d (%d pieces) not slow", i, tc.haves[i])
				}
			}
		})
	}
}

func TestOriginSlowPeersWaitsForAge(t *testing.T) {
	tor, pcs, now := originSwarm(1, 9, 10, 11)
	pcs[0].completedHandshake = now.Add(-originSlowAfter / 2)
	if got := tor.originSlowPeers(now); len(got) != 0 {
		t.Fatalf("a peer connected %v ago judged slow", originSlowAfter/2)
	}
}
