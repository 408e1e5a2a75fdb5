package p2p

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
)

// Defaults of the connection caps in Config.
const (
	DefaultMaxPeersPerTorrent = 50
	DefaultMaxAcceptedConns   = 200
	// maxAcceptedPerIP bounds the connections one address may hold open to us: a peer needs
	// one per torrent it shares with us, and a few more while reconnecting.
	maxAcceptedPerIP = 16
	// acceptRate and acceptBurst bound how fast admitted connections may arrive: each costs
	// a goroutine and a handshake until HandshakesTimeout.
	acceptRate  = 100
	acceptBurst = 200
)

// gate admits incoming peer connections. It stands in for the library's own accept rate
// limiting, which refuses a whole /24 for up to 15 minutes after one bad handshake: in a
// cluster that is every node of a rack, and any host there could trigger it.
//
// With only set, a connection is admitted when its source IP was listed (Torrent.AddPeers or
// AllowPeers) for some torrent of the client, and kept after the BitTorrent handshake only if
// it was listed for the torrent the peer asked for.
type gate struct {
	only     bool
	maxConns int
	limiter  *rate.Limiter
	log      logr.Logger
	rejected atomic.Int64
	// refusedCh is closed and replaced at every refusal (guarded by refusedMu), for
	// WaitRefused.
	refusedMu sync.Mutex
	refusedCh chan struct{}

	mu      sync.Mutex
	allowed map[metainfo.Hash]map[netip.Addr]struct{}
	open    map[string]*gatedConn // by remote address
	perIP   map[netip.Addr]int
}

func newGate(only bool, maxConns int, log logr.Logger) *gate {
	return &gate{only: only, maxConns: maxConns, limiter: rate.NewLimiter(acceptRate, acceptBurst), log: log,
		allowed: map[metainfo.Hash]map[netip.Addr]struct{}{}, open: map[string]*gatedConn{}, perIP: map[netip.Addr]int{},
		refusedCh: make(chan struct{})}
}

// refused counts one refused (or, for a peer no longer listed, closed) connection.
func (g *gate) refused() {
	g.refusedMu.Lock()
	g.rejected.Add(1)
	close(g.refusedCh)
	g.refusedCh = make(chan struct{})
	g.refusedMu.Unlock()
}

// refusals returns the count and a channel closed at the next refusal.
func (g *gate) refusals() (int64, <-chan struct{}) {
	g.refusedMu.Lock()
	defer g.refusedMu.Unlock()
	return g.rejected.Load(), g.refusedCh
}

// allow lists ip for the torrent ih.
func (g *gate) allow(ih metainfo.Hash, ips []netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	set := g.allowed[ih]
	if set == nil {
		set = map[netip.Addr]struct{}{}
		g.allowed[ih] = set
	}
	for _, ip := range ips {
		set[ip.Unmap()] = struct{}{}
	}
}

// set replaces the list of the torrent ih with ips, and closes the accepted connections of
// addresses no longer listed that were admitted for ih (their handshake named it).
func (g *gate) set(ih metainfo.Hash, ips []netip.Addr) {
	set := make(map[netip.Addr]struct{}, len(ips))
	for _, ip := range ips {
		set[ip.Unmap()] = struct{}{}
	}
	var drop []*gatedConn
	g.mu.Lock()
	g.allowed[ih] = set
	if g.only {
		for _, gc := range g.open {
			if _, ok := set[gc.ip]; !ok && gc.ih == ih {
				drop = append(drop, gc)
			}
		}
	}
	g.mu.Unlock()
	for _, gc := range drop {
		g.refused()
		g.log.V(1).Info("closed a peer connection: address no longer in the torrent's swarm", "remote", gc.key, "infoHash", ih.HexString())
		_ = gc.Close()
	}
}

// forget drops the list of the torrent ih (removed from the client).
func (g *gate) forget(ih metainfo.Hash) {
	g.mu.Lock()
	delete(g.allowed, ih)
	g.mu.Unlock()
}

func (g *gate) allowedAnyLocked(ip netip.Addr) bool {
	for _, set := range g.allowed {
		if _, ok := set[ip]; ok {
			return true
		}
	}
	return false
}

// admit wraps c if it may be handed to the library, or returns nil (the caller closes c).
func (g *gate) admit(c net.Conn) *gatedConn {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return nil
	}
	ip := ap.Addr().Unmap()
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.only && !g.allowedAnyLocked(ip):
		g.log.V(1).Info("refused a peer connection: address not in any swarm of this client", "remote", ap.String())
	case len(g.open) >= g.maxConns:
		g.log.V(1).Info("refused a peer connection: too many open", "remote", ap.String(), "max", g.maxConns)
	case g.perIP[ip] >= maxAcceptedPerIP:
		g.log.V(1).Info("refused a peer connection: too many from its address", "remote", ap.String(), "max", maxAcceptedPerIP)
	case !g.limiter.Allow():
		g.log.V(1).Info("refused a peer connection: accept rate exceeded", "remote", ap.String())
	default:
		gc := &gatedConn{Conn: c, g: g, key: c.RemoteAddr().String(), ip: ip}
		g.open[gc.key] = gc
		g.perIP[ip]++
		return gc
	}
	return nil
}

func (g *gate) release(gc *gatedConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open[gc.key] == gc {
		delete(g.open, gc.key)
	}
	if g.perIP[gc.ip]--; g.perIP[gc.ip] <= 0 {
		delete(g.perIP, gc.ip)
	}
}

// completedHandshake is the library's Callbacks.CompletedHandshake (called without the client
// lock): an accepted connection asking for a torrent its address was not listed for is closed
// before any piece is exchanged.
func (g *gate) completedHandshake(pc *torrent.PeerConn, ih torrent.InfoHash) {
	if !g.only || pc.Discovery != torrent.PeerSourceIncoming || pc.RemoteAddr == nil {
		return
	}
	g.mu.Lock()
	gc := g.open[pc.RemoteAddr.String()]
	ok := false
	if gc != nil {
		if _, ok = g.allowed[ih][gc.ip]; ok {
			gc.ih = ih
		}
	}
	g.mu.Unlock()
	if gc == nil || ok {
		return
	}
	g.refused()
	g.log.V(1).Info("refused a peer connection: address not in the torrent's swarm", "remote", gc.key, "infoHash", ih.HexString())
	_ = gc.Close()
}

// gateListener passes on the connections the gate admits and closes the others.
type gateListener struct {
	net.Listener
	g *gate
}

func (l gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if gc := l.g.admit(c); gc != nil {
			return gc, nil
		}
		l.g.refused()
		_ = c.Close()
	}
}

// gatedConn releases its place in the gate when closed.
type gatedConn struct {
	net.Conn
	g   *gate
	key string
	ip  netip.Addr
	// ih is the torrent the handshake asked for, once admitted for it (guarded by g.mu).
	ih   metainfo.Hash
	once sync.Once
}

func (c *gatedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.g.release(c) })
	return err
}
