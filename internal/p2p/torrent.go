package p2p

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
)

// Peer is another client's address.
type Peer struct {
	// Addr is "ip:port" (IPv6 in brackets); host names are not resolved.
	Addr string
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
	}
	t.c.allow(t, ips)
	if len(infos) > 0 {
		t.t.AddPeers(infos)
	}
	return errors.Join(errs...)
}

// Wait returns nil once every piece is verified, the write error if storing data failed (e.g.
// disk full), ErrDropped if the torrent was dropped, or ctx's error.
func (t *Torrent) Wait(ctx context.Context) error {
	select {
	case <-t.t.Complete().On():
		if t.download {
			t.syncOnce.Do(func() { t.syncErr = syncFile(t.path) })
		}
		return t.syncErr
	case <-t.writeFailed:
		return t.writeErr
	case <-t.t.Closed():
		return ErrDropped
	case <-ctx.Done():
		return ctx.Err()
	}
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
