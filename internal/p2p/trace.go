package p2p

import (
	"net"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
)

// Trace says where a torrent's data came from and when it started to flow: what explains a
// slow download or bytes taken from the origin that peers could have served.
type Trace struct {
	// Added is when the torrent was added to the client; FirstPeer when its first peer
	// connection (not a web seed) was established; FirstData when its first useful chunk
	// arrived, from anywhere. Zero: not yet.
	Added, FirstPeer, FirstData time.Time
	// WebSeedsAdded is when the web seeds came into use (see Config.WebSeedAfter); zero: never.
	WebSeedsAdded time.Time
	// Verified is when Downloaded (or Wait) first saw every piece verified: the end of the
	// transfer, before the file is synced and used.
	Verified time.Time
	// FromPeers is the useful data received from peers, by the peer's IP (a client binds its
	// outgoing connections to its listen IP, so that is one peer); FromWebSeeds is the useful
	// data received from the web seeds.
	FromPeers    map[string]int64
	FromWebSeeds int64
}

// trace is a Torrent's Trace as it grows; the library's callbacks feed it.
type trace struct {
	mu sync.Mutex
	Trace
}

func (tr *trace) snapshot() Trace {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := tr.Trace
	out.FromPeers = make(map[string]int64, len(tr.FromPeers))
	for k, v := range tr.FromPeers {
		out.FromPeers[k] = v
	}
	return out
}

// tracers maps the library's torrents to ours for its callbacks, which run with the library's
// lock held: a lookup here must not take Client.mu (held by add while it calls the library).
type tracers struct{ m sync.Map } // *torrent.Torrent -> *trace

func (ts *tracers) get(t *torrent.Torrent) *trace {
	v, ok := ts.m.Load(t)
	if !ok {
		return nil
	}
	return v.(*trace)
}

func (ts *tracers) peerConnAdded(pc *torrent.PeerConn) {
	tr := ts.get(pc.Torrent())
	if tr == nil {
		return
	}
	tr.mu.Lock()
	if tr.FirstPeer.IsZero() {
		tr.FirstPeer = time.Now()
	}
	tr.mu.Unlock()
}

func (ts *tracers) receivedUsefulData(ev torrent.ReceivedUsefulDataEvent) {
	tr := ts.get(ev.Peer.Torrent())
	if tr == nil || ev.Message == nil {
		return
	}
	n := int64(len(ev.Message.Piece))
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.FirstData.IsZero() {
		tr.FirstData = time.Now()
	}
	if pc, ok := ev.Peer.TryAsPeerConn(); ok {
		if tr.FromPeers == nil {
			tr.FromPeers = map[string]int64{}
		}
		host, _, err := net.SplitHostPort(pc.RemoteAddr.String())
		if err != nil {
			host = pc.RemoteAddr.String()
		}
		tr.FromPeers[host] += n
		return
	}
	tr.FromWebSeeds += n
}
