package torrent

// Origin peers (rollkeeper patch, see PATCHES.md): a downloader asks a swarm's origin (the seeder
// that holds every piece from the start) only for pieces no other connected peer holds, keeps few
// requests queued on it, and cancels those another peer can now serve. The origin's upload then
// carries distinct pieces, about one copy of the file, and a peer that joins once the others are
// complete takes nothing from it.
//
// Without this every downloader queues hundreds of requests on the origin (the only source at
// first), the origin serves them long after other peers got the same pieces, and it uploads 1.5
// copies or more while distinct pieces wait.

import (
	"net/netip"
	"slices"
	"sort"
	"time"
)

// originMaxRequests caps the requests a downloader keeps queued on an origin: enough to keep
// its share of the origin's upload busy, few enough that a piece queued there is rarely served
// after a peer got it.
const originMaxRequests = 32

// AddOriginIPs marks the peers at these IPs as origins of every torrent (see origin-peers.go).
func (cl *Client) AddOriginIPs(ips ...netip.Addr) {
	cl.lock()
	defer cl.unlock()
	old := cl.originIPs.Load()
	m := make(map[netip.Addr]struct{}, len(ips)+1)
	if old != nil {
		for ip := range *old {
			m[ip] = struct{}{}
		}
	}
	for _, ip := range ips {
		m[ip.Unmap()] = struct{}{}
	}
	cl.originIPs.Store(&m)
	for t := range cl.torrents {
		for pc := range t.conns {
			pc.originKnown = false
		}
	}
}

// isOriginAddr reports whether addr is at an origin's IP. Safe without the client lock.
func (cl *Client) isOriginAddr(addr PeerRemoteAddr) bool {
	m := cl.originIPs.Load()
	if m == nil || addr == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	_, ok := (*m)[ap.Addr().Unmap()]
	return ok
}

// isOrigin reports whether the peer is an origin.
func (p *PeerConn) isOrigin() bool {
	if !p.originKnown {
		p.originKnown = true
		p.origin = p.t.cl.isOriginAddr(p.RemoteAddr)
	}
	return p.origin
}

// originsWithAllPieces counts the connected origins that have every piece.
func (t *Torrent) originsWithAllPieces() (n int) {
	if t.cl.originIPs.Load() == nil {
		return 0
	}
	for p := range t.connsWithAllPieces {
		if pc, ok := p.TryAsPeerConn(); ok && pc.isOrigin() {
			n++
		}
	}
	return n
}

// heldByPeers reports whether a connected peer that is not an origin, and not slow, has piece
// i; origins is originsWithAllPieces, slow is slowPeers.
func (t *Torrent) heldByPeers(i pieceIndex, origins int, slow []*PeerConn) bool {
	n := t.piece(i).availability() - origins
	for _, pc := range slow {
		if n <= 0 {
			break
		}
		if pc.peerHasPiece(i) {
			n--
		}
	}
	return n > 0
}

// A peer is slow when it has delivered to us, while we had requests on it for at least
// slowPeerMinExpecting, less than slowPeerFraction of the median of such peers (slowPeerMinPeers
// of them at least, origins apart). A piece only slow peers hold is asked of the origin: in a
// swarm with one node on a link a quarter as fast, every other node waited seconds at the end
// for the pieces only that node had (it served them to all, at a seventh of its link each).
const (
	slowPeerMinExpecting = time.Second
	slowPeerFraction     = 0.5
	slowPeerMinPeers     = 3
)

// slowPeers returns the slow peers (see slowPeerFraction), most often none.
func (t *Torrent) slowPeers() (slow []*PeerConn) {
	type peerRate struct {
		pc   *PeerConn
		rate float64
	}
	var rates []peerRate
	for pc := range t.conns {
		if pc.isOrigin() || pc.totalExpectingTime() < slowPeerMinExpecting {
			continue
		}
		rates = append(rates, peerRate{pc, pc.downloadRate()})
	}
	if len(rates) < slowPeerMinPeers {
		return nil
	}
	sort.Slice(rates, func(i, j int) bool { return rates[i].rate < rates[j].rate })
	limit := rates[len(rates)/2].rate * slowPeerFraction
	for _, r := range rates {
		if r.rate >= limit {
			break
		}
		slow = append(slow, r.pc)
	}
	return slow
}

// originCancelHeld cancels p's requests for pieces another peer now holds, if p is an origin.
func (p *PeerConn) originCancelHeld() {
	if !p.isOrigin() || p.requestState.Requests.IsEmpty() {
		return
	}
	t := p.t
	origins, slow := t.originsWithAllPieces(), t.slowPeers()
	p.requestState.Requests.IterateSnapshot(func(r RequestIndex) bool {
		if t.heldByPeers(t.pieceIndexOfRequestIndex(r), origins, slow) {
			p.cancel(r)
		}
		return true
	})
}

// Origin seeding (the seeder's side): the origin sends a chunk of a piece only if the piece's
// chunks are not going to another connected peer, so that two downloaders that picked the same
// piece (each picks the origin's pieces at random, independently) do not both get it. The second
// one's requests wait; it cancels them once the first holds the piece (originCancelHeld), and
// meanwhile the origin's upload goes to distinct pieces for the others.

// originHold is how long a piece stays with the peer its first chunk went to (a piece takes
// 0.5 s at an eighth of a 4 MiB/s upload; a peer that needs much longer is slow, and the others
// should not wait for it).
const originHold = time.Second

type originOwner struct {
	pc *PeerConn
	at time.Time
}

// SetOriginSeeding turns origin seeding on for this torrent (see origin-peers.go).
func (t *Torrent) SetOriginSeeding(on bool) {
	t.cl.lock()
	defer t.cl.unlock()
	t.originSeeding = on
}

// originSkip reports whether to hold chunk r back from c for now: its piece's chunks started
// going to another connected peer less than originHold ago.
func (c *PeerConn) originSkip(r Request, now time.Time) bool {
	t := c.t
	if !t.originSeeding {
		return false
	}
	o := t.originOwners[pieceIndex(r.Index)]
	return o.pc != nil && o.pc != c && !o.pc.closed.IsSet() && now.Sub(o.at) < originHold
}

// originSent records that a chunk of r's piece goes to c.
func (c *PeerConn) originSent(r Request, now time.Time) {
	t := c.t
	if !t.originSeeding {
		return
	}
	if t.originOwners == nil {
		t.originOwners = make(map[pieceIndex]originOwner)
	}
	i := pieceIndex(r.Index)
	if o := t.originOwners[i]; o.pc != c {
		// The hold counts from the piece's first chunk to this peer, not its last: a slow
		// peer holds a piece for originHold at most, then another may take it over.
		t.originOwners[i] = originOwner{c, now}
	}
}

// originRecheck is how soon a downloader asks an origin again after it had nothing to ask it for:
// nothing else prompts it (the origin sends no Have, and no chunk comes from it), and the
// pieces only the origin holds may be wanted again (a holder left, a cancel freed a chunk).
const originRecheck = 200 * time.Millisecond

// originRearm schedules a request update of p, an origin with no request outstanding.
func (p *PeerConn) originRearm() {
	if !p.isOrigin() || p.closed.IsSet() || p.t.haveAllPieces() || !p.requestState.Requests.IsEmpty() {
		return
	}
	if p.originTimer == nil {
		p.originTimer = time.AfterFunc(originRecheck, func() {
			p.locker().Lock()
			defer p.locker().Unlock()
			p.onNeedUpdateRequests("origin recheck")
		})
		return
	}
	p.originTimer.Reset(originRecheck)
}

// originPeersWait bounds how long a downloader waits, after connecting to an origin, for its
// other peers to be dialed and to say what they hold before it asks the origin anything.
const originPeersWait = time.Second

// SetOriginWaitsForPeers says whether complete peers are known to be in the swarm: then a
// downloader asks an origin nothing until its other peers are dialed and said what they hold
// (for at most originPeersWait after connecting to the origin). A node joining a complete swarm
// would otherwise ask the origin in the milliseconds before its peers' bitfields arrive; in a
// swarm where nobody is complete yet the wait would only delay the origin.
func (t *Torrent) SetOriginWaitsForPeers(wait bool) {
	t.cl.lock()
	defer t.cl.unlock()
	t.originWaitsForPeers = wait
}

// originWaitsForPeers reports whether p, an origin, must not be asked anything yet (see
// SetOriginWaitsForPeers).
func (p *PeerConn) originWaitsForPeers() bool {
	t := p.t
	if !t.originWaitsForPeers || time.Since(p.completedHandshake) >= originPeersWait {
		return false
	}
	if t.peers.Len() > 0 || len(t.halfOpen) > 0 {
		return true
	}
	for pc := range t.conns {
		if pc != p && !pc.isOrigin() && pc.lastMessageReceived.IsZero() {
			return true
		}
	}
	return false
}

// rateRequestQueue is how much of a peer's observed rate a downloader keeps requested from it, and
// rateRequestMin the fewest requests it keeps queued anyway.
const (
	rateRequestQueue = time.Second
	rateRequestMin   = 8
)

// rateRequestCap caps the requests queued on a peer at about rateRequestQueue of what it has
// been delivering (rollkeeper patch, PATCHES.md): chunks queued on a slow peer (an upload shared
// by many, a slow link) are chunks no other peer is asked for, and the whole swarm's tail waited
// for them. During a request update it is the value pinned at its start (pinRateRequestCap).
func (cn *PeerConn) rateRequestCap() maxRequests {
	if cn.rateCapPinned {
		return cn.rateCap
	}
	return cn.computeRateRequestCap()
}

// pinRateRequestCap holds rateRequestCap at its current value until the returned func is called.
// The rate it derives from falls as time passes, and a request update checks the cap twice per
// request (applyRequestState stops adding at the cap, request refuses past it, and
// applyRequestState panics on a refusal): a cap that fell between the two crashed the process
// (bench-distribution -n 32, about one run in twenty).
func (cn *PeerConn) pinRateRequestCap() (unpin func()) {
	if cn.rateCapPinned {
		return func() {} // an update within an update keeps the outer one's cap
	}
	cn.rateCap, cn.rateCapPinned = cn.computeRateRequestCap(), true
	return func() { cn.rateCapPinned = false }
}

func (cn *PeerConn) computeRateRequestCap() maxRequests {
	if cn.totalExpectingTime() < rateRequestQueue {
		return maxLocalToRemoteRequests
	}
	rate := cn.downloadRate()
	if rate <= 0 {
		return maxLocalToRemoteRequests
	}
	n := int(rate * rateRequestQueue.Seconds() / float64(cn.t.chunkSize.Int()))
	return maxRequests(max(n, rateRequestMin))
}

// The origin serves slow peers last. Its upload is what bounds the swarm (every piece leaves it
// once), so each byte it sends a peer that passes pieces on slowly delays the pieces the others
// wait for: with one node of eight on a quarter of the link rate, the origin gave that node an
// eighth of its upload, and the others finished about 8 % later than with no slow node. A slow
// peer still gets the origin's pieces until it has originSlowMinShare of a faster peer's, then
// when no other peer is waiting for one, and from the other peers meanwhile.
//
// Slow here is the peer's completion rate as its Have messages show it (what it takes from
// everyone, not what the origin gives it, which is the origin's split among its peers): below
// originSlowFraction of the median of the incomplete peers connected for originSlowAfter,
// originSlowMinPeers of them at least.
const (
	originSlowAfter    = time.Second
	originSlowFraction = 0.5
	originSlowMinPeers = 3
	// originSlowMinShare is the least a slow peer gets of what the origin sent the median
	// other peer: deferring a peer makes its rate lower still, so one that looked slow by
	// chance (a busy moment, peers that served others first) would otherwise get nothing from
	// the origin for good (a 1 GiB run at 64 MiB/s on two cores starved half the nodes, which
	// then fell back to the web seed).
	originSlowMinShare = 0.25
	// originSlowRefresh is how long the slow set is reused (upload asks for every chunk).
	originSlowRefresh = 100 * time.Millisecond
	// originDeferRecheck is how soon a deferred slow peer's writer looks again.
	originDeferRecheck = 250 * time.Millisecond
)

// originDefer reports whether to hold back an origin's upload to c for now: c is a slow peer
// and another peer, not slow, has a request ready that is not held (originSkip).
func (c *PeerConn) originDefer(now time.Time) bool {
	t := c.t
	if !t.originSeeding {
		return false
	}
	slow := t.originSlowPeers(now)
	if _, ok := slow[c]; !ok || c._stats.BytesWrittenData.Int64() < t.originSlowShare {
		return false
	}
	for pc := range t.conns {
		if _, ok := slow[pc]; ok || pc == c {
			continue
		}
		for r := range pc.readyPeerRequests {
			if !pc.originSkip(r, now) {
				return true
			}
		}
	}
	return false
}

// originSlowPeers returns the peers that complete pieces slowly (see originDefer), recomputed
// at most every originSlowRefresh.
func (t *Torrent) originSlowPeers(now time.Time) map[*PeerConn]struct{} {
	if now.Sub(t.originSlowAt) < originSlowRefresh {
		return t.originSlow
	}
	t.originSlowAt = now
	clear(t.originSlow)
	type peerRate struct {
		pc   *PeerConn
		rate float64
	}
	var rates []peerRate
	for pc := range t.conns {
		age := now.Sub(pc.completedHandshake)
		if pc.completedHandshake.IsZero() || age < originSlowAfter {
			continue
		}
		if all, known := pc.peerHasAllPieces(); all || !known {
			continue
		}
		rates = append(rates, peerRate{pc, float64(pc.haves) / age.Seconds()})
	}
	if len(rates) < originSlowMinPeers {
		return t.originSlow
	}
	sort.Slice(rates, func(i, j int) bool { return rates[i].rate < rates[j].rate })
	limit := rates[len(rates)/2].rate * originSlowFraction
	var sent []int64
	for _, r := range rates {
		if r.rate >= limit {
			sent = append(sent, r.pc._stats.BytesWrittenData.Int64())
			continue
		}
		if t.originSlow == nil {
			t.originSlow = make(map[*PeerConn]struct{})
		}
		t.originSlow[r.pc] = struct{}{}
	}
	slices.Sort(sent)
	t.originSlowShare = int64(float64(sent[len(sent)/2]) * originSlowMinShare)
	return t.originSlow
}
