package p2p

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
)

// Peer is another client's address.
type Peer struct {
	// Addr is "ip:port" (IPv6 in brackets); host names are not resolved.
	Addr string
	// Origin marks the swarm's origin: a seeder that holds every piece from the start (the
	// operator's). A downloader asks it only for pieces no other connected peer holds, keeps
	// few requests queued on it and cancels those another peer can now serve, so that its
	// upload carries each piece about once and the peers serve each other the rest.
	Origin bool
	// Complete says the peer has every piece (the tracker says so). When some are, a
	// downloader waits for its peers' bitfields before asking an origin anything, so that a
	// node joining a complete swarm takes nothing from the origin.
	Complete bool
}

// Torrent is one torrent in a Client, seeding or downloading.
type Torrent struct {
	c    *Client
	t    *torrent.Torrent
	mi   MetaInfo
	path string

	download bool // data written by this client: fsync once complete

	syncOnce sync.Once
	syncErr  error

	writeErrOnce sync.Once
	writeErr     error
	writeFailed  chan struct{} // closed after writeErr is set

	trace trace
	// waitsForPeers: a complete peer was added (see Peer.Complete).
	waitsForPeers atomic.Bool

	mu         sync.Mutex
	lastSample rateSample
	rate       float64
}

type rateSample struct {
	at    time.Time
	bytes int64
}

func newTorrent(c *Client, tt *torrent.Torrent, mi MetaInfo, path string, download bool) *Torrent {
	t := &Torrent{c: c, t: tt, mi: mi, path: path, download: download, writeFailed: make(chan struct{})}
	t.trace.Added = time.Now()
	// The library calls this in a goroutine of its own per failed chunk write (e.g. ENOSPC);
	// without it the library only disables downloading and logs.
	tt.SetOnWriteChunkError(func(err error) {
		t.writeErrOnce.Do(func() {
			t.writeErr = fmt.Errorf("writing %s: %w", t.path, err)
			close(t.writeFailed)
			tt.DisallowDataDownload()
		})
	})
	return t
}

// MetaInfo is the torrent's metainfo.
func (t *Torrent) MetaInfo() MetaInfo { return t.mi }

// Path is the torrent's file: the seeded file, or dir/name for a download. A download's file is
// complete only after Wait returned nil.
func (t *Torrent) Path() string { return t.path }

// AllowPeers replaces the list of IPs for this torrent with the peers' IPs: with
// Config.OnlyListedPeers, only they may connect to us for it. IPs listed before (by AllowPeers
// or AddPeers) and not in peers are no longer accepted for it, and the connections they opened
// to us for it are closed (connections we dialed are kept). Invalid addresses are reported in
// the error and skipped.
func (t *Torrent) AllowPeers(peers []Peer) error {
	var errs []error
	ips := make([]netip.Addr, 0, len(peers))
	for _, p := range peers {
		ap, err := netip.ParseAddrPort(p.Addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %q: want ip:port", p.Addr))
			continue
		}
		ips = append(ips, ap.Addr())
	}
	t.c.setAllowed(t, ips)
	return errors.Join(errs...)
}

// AddPeers adds peer addresses to connect to, and adds their IPs to the torrent's list (see
// AllowPeers; listed first, so that a peer that dials us back once it has seen us too is
// accepted). Invalid addresses are reported in the error and skipped; the client's own address
// is skipped silently.
func (t *Torrent) AddPeers(peers []Peer) error {
	self := t.c.Addr()
	var errs []error
	infos := make([]torrent.PeerInfo, 0, len(peers))
	ips := make([]netip.Addr, 0, len(peers))
	for _, p := range peers {
		ap, err := netip.ParseAddrPort(p.Addr)
		if err != nil || ap.Port() == 0 {
			errs = append(errs, fmt.Errorf("peer %q: want ip:port", p.Addr))
			continue
		}
		if ap.String() == self {
			continue
		}
		infos = append(infos, torrent.PeerInfo{Addr: ap, Source: torrent.PeerSourceTracker})
		ips = append(ips, ap.Addr())
		if p.Origin {
			t.addOrigin(ap.Addr())
		} else if p.Complete && !t.waitsForPeers.Swap(true) {
			t.t.SetOriginWaitsForPeers(true)
		}
	}
	t.c.allow(t, ips)
	if len(infos) > 0 {
		t.t.AddPeers(infos)
	}
	return errors.Join(errs...)
}

// addOrigin marks ip as an origin (see Peer.Origin), for every torrent of the client.
func (t *Torrent) addOrigin(ip netip.Addr) {
	t.c.mu.Lock()
	known := t.c.origins[ip]
	if !known {
		t.c.origins[ip] = true
	}
	t.c.mu.Unlock()
	if !known {
		t.c.cl.AddOriginIPs(ip)
	}
}

// Wait is Downloaded, then Sync: it returns nil once every piece is verified and the file is
// on disk, the write error if storing data failed (e.g. disk full), ErrDropped if the torrent was
// dropped, or ctx's error.
func (t *Torrent) Wait(ctx context.Context) error {
	if err := t.Downloaded(ctx); err != nil {
		return err
	}
	return t.Sync()
}

// Downloaded returns nil once every piece is verified (the file may not be on disk yet: see
// Sync), the write error if storing data failed (e.g. disk full), ErrDropped if the torrent was
// dropped, or ctx's error.
func (t *Torrent) Downloaded(ctx context.Context) error {
	select {
	case <-t.t.Complete().On():
		t.trace.mu.Lock()
		if t.trace.Verified.IsZero() {
			t.trace.Verified = time.Now()
		}
		t.trace.mu.Unlock()
		return nil
	case <-t.writeFailed:
		return t.writeErr
	case <-t.t.Closed():
		return ErrDropped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sync writes a complete download's file to disk (once: later calls return the first result), so
// that the pieces the completion database records as verified are there after a crash. A
// caller may read the file meanwhile (to install it): the two overlap.
func (t *Torrent) Sync() error {
	if !t.download {
		return nil
	}
	t.syncOnce.Do(func() { t.syncErr = syncFile(t.path) })
	return t.syncErr
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return nil
}

// Complete reports whether every piece is verified.
func (t *Torrent) Complete() bool { return t.t.Complete().Bool() }

// Drop removes the torrent from the client (closing its connections). The file stays.
func (t *Torrent) Drop() {
	t.t.Drop()
	t.c.remove(t)
}

// waitVerified waits until no piece is queued for or being hashed, then fails with ErrMismatch
// if a piece is not complete.
func (t *Torrent) waitVerified(ctx context.Context) error {
	// Completion has a signal; a failed piece has none that is cheap to evaluate (piece-state
	// events come several per piece and each check walks all pieces), so that is polled.
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if t.t.Complete().Bool() {
			return nil
		}
		settled, bad := true, -1
		index := 0
		for _, run := range t.t.PieceStateRuns() {
			s := run.PieceState
			if s.Hashing || s.QueuedForHash || s.Marking || !s.Ok {
				settled = false
			} else if !s.Complete && bad < 0 {
				bad = index
			}
			index += run.Length
		}
		if settled && bad >= 0 {
			return fmt.Errorf("piece %d of %d fails its hash: %w", bad, t.mi.NumPieces, ErrMismatch)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.t.Closed():
			return ErrDropped
		case <-t.t.Complete().On():
		case <-tick.C:
		}
	}
}

// Progress is a cheap snapshot for status reporting.
type Progress struct {
	// Done is the number of bytes in verified pieces; Total is the file size.
	Done, Total int64
	// Peers is the number of connected peers (web seeds not included).
	Peers int
	// Rate is the useful download rate in bytes/s, averaged since the previous Progress call
	// that was at least a second earlier (0 on the first call).
	Rate float64
}

// Progress returns bytes verified, peers and download rate.
func (t *Torrent) Progress() Progress {
	st := t.t.Stats()
	useful := st.BytesReadUsefulData.Int64()
	now := time.Now()
	t.mu.Lock()
	if t.lastSample.at.IsZero() {
		t.lastSample = rateSample{now, useful}
	} else if dt := now.Sub(t.lastSample.at); dt >= time.Second {
		t.rate = float64(useful-t.lastSample.bytes) / dt.Seconds()
		t.lastSample = rateSample{now, useful}
	}
	r := t.rate
	t.mu.Unlock()
	return Progress{Done: t.verifiedBytes(st.PiecesComplete), Total: t.mi.Size, Peers: st.ActivePeers, Rate: r}
}

func (t *Torrent) verifiedBytes(piecesComplete int) int64 {
	if piecesComplete >= t.mi.NumPieces {
		return t.mi.Size
	}
	done := int64(piecesComplete) * t.mi.PieceLength
	last := t.mi.NumPieces - 1
	if piecesComplete > 0 && t.t.PieceState(last).Complete {
		done -= t.mi.PieceLength - t.mi.pieceSize(last)
	}
	return done
}

// startWebSeedFallback adds the metainfo's web seeds once the download got no useful byte for
// after (at once if after < 0). It stops when the torrent completes or is dropped.
func (t *Torrent) startWebSeedFallback(after time.Duration) {
	if after < 0 {
		t.useWebSeeds("at once (WebSeedAfter < 0)")
		return
	}
	t.c.wg.Add(1)
	go func() {
		defer t.c.wg.Done()
		tick := time.NewTicker(max(after/10, 10*time.Millisecond))
		defer tick.Stop()
		useful := func() int64 {
			st := t.t.Stats()
			return st.BytesReadUsefulData.Int64()
		}
		last, since := useful(), time.Now()
		for {
			select {
			case <-t.t.Closed():
				return
			case <-t.t.Complete().On():
				return
			case now := <-tick.C:
				if n := useful(); n != last {
					last, since = n, now
				} else if now.Sub(since) >= after {
					t.useWebSeeds(fmt.Sprintf("no useful byte from peers for %s", after))
					return
				}
			}
		}
	}()
}

func (t *Torrent) useWebSeeds(why string) {
	t.trace.mu.Lock()
	t.trace.WebSeedsAdded = time.Now()
	t.trace.mu.Unlock()
	t.t.AddWebSeeds(t.mi.WebSeeds)
	t.c.log.Info("downloading from the web seeds (the origin)", "name", t.mi.Name, "infoHash", t.mi.InfoHash, "why", why)
}

// Trace says where the torrent's data came from and when it started to flow.
func (t *Torrent) Trace() Trace { return t.trace.snapshot() }

// Stats are cumulative counters for this torrent in this client.
type Stats struct {
	// BytesReadData counts piece data received from peers and web seeds (including wasted
	// duplicates); BytesReadUsefulData only the data that was needed.
	BytesReadData, BytesReadUsefulData int64
	// BytesWebSeedData is the part of BytesReadData that came from web seeds.
	BytesWebSeedData int64
	// BytesWrittenData counts piece data uploaded to peers.
	BytesWrittenData int64
	// PiecesDirtiedBad counts pieces that failed their hash after data was received.
	PiecesDirtiedBad int64
	Peers, Seeders   int
	PiecesDone       int
	PiecesTotal      int
	VerifiedBytes    int64
}

// Stats returns the torrent's counters.
func (t *Torrent) Stats() Stats {
	st := t.t.Stats()
	return Stats{
		BytesReadData:       st.BytesReadData.Int64(),
		BytesReadUsefulData: st.BytesReadUsefulData.Int64(),
		BytesWebSeedData:    st.WebSeeds.BytesReadData.Int64(),
		BytesWrittenData:    st.BytesWrittenData.Int64(),
		PiecesDirtiedBad:    st.PiecesDirtiedBad.Int64(),
		Peers:               st.ActivePeers,
		Seeders:             st.ConnectedSeeders,
		PiecesDone:          st.PiecesComplete,
		PiecesTotal:         t.mi.NumPieces,
		VerifiedBytes:       t.verifiedBytes(st.PiecesComplete),
	}
}
