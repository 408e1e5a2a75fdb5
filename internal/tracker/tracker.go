// Package tracker makes ZooKeeper the BitTorrent tracker of rollkeeper: it publishes a version's
// metainfo (chunked under torrents/<svc>/<version>), registers peers (ephemeral
// peers/<infohash>/<node>) and follows a peer set. The operator's seeder and the agents' fetcher
// both use it; nothing else touches those znodes.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// ErrNotPublished means the version has no torrent (yet).
var ErrNotPublished = errors.New("torrent not published")

// Tracker reads and writes torrent znodes.
type Tracker struct {
	ZK     *zkclient.Client
	Layout zklayout.Layout
}

// Publish writes the torrent summary and its metainfo chunks, the summary last, so a reader
// that sees the summary finds every chunk.
// Publishing the same torrent again is a no-op; another infohash for the same version is an error.
func (t Tracker) Publish(ctx context.Context, tor zklayout.Torrent, meta []byte) error {
	tor.Chunks = zklayout.MetaChunks(len(meta))
	tor.MetaSize = len(meta)
	if existing, _, err := t.Read(ctx, tor.Service, tor.Version); err == nil {
		if existing.InfoHash != tor.InfoHash {
			return fmt.Errorf("publish torrent %s/%s: already published with infohash %s, not %s", tor.Service, tor.Version, existing.InfoHash, tor.InfoHash)
		}
		return nil
	} else if !errors.Is(err, ErrNotPublished) {
		return err
	}
	data, err := zklayout.Encode(&tor)
	if err != nil {
		return err
	}
	if err := t.ZK.EnsurePath(ctx, t.Layout.TorrentService(tor.Service)); err != nil {
		return err
	}
	p := t.Layout.Torrent(tor.Service, tor.Version)
	// A half-written earlier attempt (no summary) is replaced.
	if err := t.ZK.DeleteTree(ctx, p); err != nil {
		return err
	}
	// One write per chunk (a transaction must stay under ZooKeeper's 1 MiB packet limit); the
	// summary is written last, and readers treat an empty summary as not published yet.
	if _, err := t.ZK.Create(ctx, p, nil, zkclient.Persistent); err != nil {
		return fmt.Errorf("publish torrent %s/%s: %w", tor.Service, tor.Version, err)
	}
	for i := 0; i < tor.Chunks; i++ {
		end := min(len(meta), (i+1)*zklayout.MetaChunkSize)
		if _, err := t.ZK.Create(ctx, t.Layout.TorrentChunk(tor.Service, tor.Version, i), meta[i*zklayout.MetaChunkSize:end], zkclient.Persistent); err != nil {
			return fmt.Errorf("publish torrent %s/%s chunk %d: %w", tor.Service, tor.Version, i, err)
		}
	}
	if _, err := t.ZK.Set(ctx, p, data, 0); err != nil {
		return fmt.Errorf("publish torrent %s/%s: %w", tor.Service, tor.Version, err)
	}
	return nil
}

// Read returns the torrent of svc at version and its metainfo. ErrNotPublished if there is none;
// a malformed summary or a metainfo that does not reassemble wraps zklayout.ErrMalformed.
func (t Tracker) Read(ctx context.Context, svc, version string) (zklayout.Torrent, []byte, error) {
	var tor zklayout.Torrent
	data, _, err := t.ZK.Get(ctx, t.Layout.Torrent(svc, version))
	if errors.Is(err, zkclient.ErrNoNode) || (err == nil && len(data) == 0) {
		return tor, nil, fmt.Errorf("torrent %s/%s: %w", svc, version, ErrNotPublished)
	}
	if err != nil {
		return tor, nil, err
	}
	if err := zklayout.Decode(data, &tor); err != nil {
		return tor, nil, fmt.Errorf("torrent %s/%s: %w", svc, version, err)
	}
	meta, err := Assemble(tor, func(i int) ([]byte, error) {
		chunk, _, err := t.ZK.Get(ctx, t.Layout.TorrentChunk(svc, version, i))
		return chunk, err
	})
	if err != nil {
		return tor, nil, fmt.Errorf("torrent %s/%s: %w", svc, version, err)
	}
	return tor, meta, nil
}

// Assemble reassembles the metainfo of a decoded (so validated: MetaSize and Chunks bounded)
// summary from its chunks, read one at a time by get. The buffer grows as chunks arrive, so a
// summary that lies about its size costs nothing up front; a chunk over MetaChunkSize, a total
// over or under MetaSize wrap zklayout.ErrMalformed.
func Assemble(tor zklayout.Torrent, get func(i int) ([]byte, error)) ([]byte, error) {
	if tor.MetaSize < 1 || tor.MetaSize > zklayout.MaxMetaSize || tor.Chunks != zklayout.MetaChunks(tor.MetaSize) {
		return nil, fmt.Errorf("%w: %d chunks for %d metainfo bytes", zklayout.ErrMalformed, tor.Chunks, tor.MetaSize)
	}
	var meta []byte
	for i := 0; i < tor.Chunks; i++ {
		chunk, err := get(i)
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		if len(chunk) > zklayout.MetaChunkSize {
			return nil, fmt.Errorf("%w: chunk %d is %d bytes, at most %d", zklayout.ErrMalformed, i, len(chunk), zklayout.MetaChunkSize)
		}
		if len(meta)+len(chunk) > tor.MetaSize {
			return nil, fmt.Errorf("%w: metainfo is over %d bytes at chunk %d, summary says %d", zklayout.ErrMalformed, len(meta)+len(chunk), i, tor.MetaSize)
		}
		meta = append(meta, chunk...)
	}
	if len(meta) != tor.MetaSize {
		return nil, fmt.Errorf("%w: metainfo is %d bytes, summary says %d", zklayout.ErrMalformed, len(meta), tor.MetaSize)
	}
	return meta, nil
}

// Register adds node to infoHash's peer set for as long as the session lives (or until the
// returned func removes it). A stale entry of an earlier session of the same node is replaced.
func (t Tracker) Register(ctx context.Context, infoHash string, p zklayout.Peer) (func(context.Context) error, error) {
	data, err := zklayout.Encode(&p)
	if err != nil {
		return nil, err
	}
	if err := t.ZK.EnsurePath(ctx, t.Layout.PeerSet(infoHash)); err != nil {
		return nil, err
	}
	path := t.Layout.Peer(infoHash, p.Node)
	_, err = t.ZK.Create(ctx, path, data, zkclient.Ephemeral)
	if errors.Is(err, zkclient.ErrNodeExists) {
		err = t.ZK.Multi(ctx, zkclient.DeleteOp(path, -1), zkclient.CreateOp(path, data, zkclient.Ephemeral))
	}
	if err != nil {
		return nil, fmt.Errorf("register peer %s for %s: %w", p.Node, infoHash, err)
	}
	return func(ctx context.Context) error {
		if err := t.ZK.Delete(ctx, path, -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			return err
		}
		return nil
	}, nil
}

// Update rewrites p's entry in infoHash's peer set (a peer that became complete): one write
// when the entry is this session's, where Register takes a read, a create that fails and a
// multi (ZooKeeper logs the failed create as well). Otherwise it registers p.
func (t Tracker) Update(ctx context.Context, infoHash string, p zklayout.Peer) error {
	data, err := zklayout.Encode(&p)
	if err != nil {
		return err
	}
	st, err := t.ZK.Set(ctx, t.Layout.Peer(infoHash, p.Node), data, -1)
	if err == nil && st.EphemeralOwner == t.ZK.Session().ID {
		return nil
	}
	// Gone (a new session), or an entry of an earlier session (which ends with it).
	_, err = t.Register(ctx, infoHash, p)
	return err
}

// Follow calls add with every peer of infoHash other than self, once per peer, now and
// whenever one joins, until ctx ends. Each join costs one children read and one read of the
// new entry: no agent re-reads the whole set on every change.
func (t Tracker) Follow(ctx context.Context, infoHash, self string, add func([]zklayout.Peer)) error {
	return t.follow(ctx, infoHash, self, add, nil, nil, nil)
}

// FollowWhen is Follow that, after the peer set changed, reads it again only once ready
// returns nil (an error ends it). The set's watch is not armed again meanwhile, so a follower
// that has no use for newcomers yet (a complete seeder that nobody unknown has asked for a
// connection) costs no request and gets no event however many peers join or leave.
func (t Tracker) FollowWhen(ctx context.Context, infoHash, self string, add func([]zklayout.Peer), ready func(context.Context) error) error {
	return t.follow(ctx, infoHash, self, add, nil, ready, nil)
}

// FollowWhenRead is FollowWhen that calls read after each reading of the set (once add has
// what it found). A joining peer registers after its first reading: requests of one session
// are answered in order, and a read sent after the registration (a write) waited for
// ZooKeeper's disk before the peer could dial anyone.
func (t Tracker) FollowWhenRead(ctx context.Context, infoHash, self string, add func([]zklayout.Peer), ready func(context.Context) error, read func()) error {
	return t.follow(ctx, infoHash, self, add, nil, ready, read)
}

// FollowChanges is Follow that also reports leaves: left (when not nil) is called with the node
// names of peers reported to joined earlier whose entries are gone (unregistered, or their
// session ended). A name that comes back is reported to joined again, with its new entry.
func (t Tracker) FollowChanges(ctx context.Context, infoHash, self string, joined func([]zklayout.Peer), left func([]string)) error {
	return t.follow(ctx, infoHash, self, joined, left, nil, nil)
}

func (t Tracker) follow(ctx context.Context, infoHash, self string, joined func([]zklayout.Peer), left func([]string), ready func(context.Context) error, read func()) error {
	// seen: names read (true: reported to joined; false: malformed, reported never).
	seen := map[string]bool{}
	if err := t.ZK.EnsurePath(ctx, t.Layout.PeerSet(infoHash)); err != nil {
		return err
	}
	for {
		names, _, w, err := t.ZK.ChildrenW(ctx, t.Layout.PeerSet(infoHash))
		if err != nil {
			return err
		}
		var todo []string
		for _, n := range names {
			if _, ok := seen[n]; !ok && n != self {
				todo = append(todo, n)
			}
		}
		entries, err := t.readPeers(ctx, infoHash, todo)
		if err != nil {
			return err
		}
		var fresh []zklayout.Peer
		for i, e := range entries {
			switch {
			case e.gone:
			case e.malformed:
				seen[todo[i]] = false // never acted on
			default:
				seen[todo[i]] = true
				fresh = append(fresh, e.peer)
			}
		}
		// Names that left may come back (restarts): let them be read again then.
		present := map[string]bool{}
		for _, n := range names {
			present[n] = true
		}
		var gone []string
		for n, reported := range seen {
			if !present[n] {
				delete(seen, n)
				if reported {
					gone = append(gone, n)
				}
			}
		}
		if len(gone) > 0 && left != nil {
			sort.Strings(gone)
			left(gone)
		}
		if len(fresh) > 0 {
			joined(fresh)
		}
		if read != nil {
			read()
		}
		if err := w.Wait(ctx); err != nil {
			return err
		}
		if ready != nil {
			if err := ready(ctx); err != nil {
				return err
			}
		}
	}
}

// peerEntry is one peer znode as read: gone (deleted before it was read), malformed, or peer.
type peerEntry struct {
	peer            zklayout.Peer
	gone, malformed bool
}

// maxParallelReads bounds the peer entries read at once: a joining node reads the whole set,
// and one request at a time made its first dial wait a round trip per peer.
const maxParallelReads = 16

// readPeers reads the entries of names under infoHash's peer set, up to maxParallelReads at a
// time (one session pipelines them), in the order of names.
func (t Tracker) readPeers(ctx context.Context, infoHash string, names []string) ([]peerEntry, error) {
	out := make([]peerEntry, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, maxParallelReads)
	var wg sync.WaitGroup
	for i, n := range names {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			data, _, err := t.ZK.Get(ctx, t.Layout.Peer(infoHash, n))
			switch {
			case errors.Is(err, zkclient.ErrNoNode):
				out[i].gone = true
			case err != nil:
				errs[i] = err
			default:
				out[i].malformed = zklayout.Decode(data, &out[i].peer) != nil
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// Topology is where a node sits, for peer preference.
type Topology struct {
	Zone, Rack string
}

// Order sorts peers: same rack first, then same zone, then the rest (each by node name, so
// the order is deterministic).
func Order(self Topology, peers []zklayout.Peer) []zklayout.Peer {
	rank := func(p zklayout.Peer) int {
		switch {
		case self.Rack != "" && p.Rack == self.Rack && p.Zone == self.Zone:
			return 0
		case self.Zone != "" && p.Zone == self.Zone:
			return 1
		}
		return 2
	}
	out := append([]zklayout.Peer(nil), peers...)
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := rank(out[i]), rank(out[j])
		if ri != rj {
			return ri < rj
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// WaitPublished blocks until the torrent of svc at version is published (watching its znode,
// not polling) and returns it, or ctx ends.
func (t Tracker) WaitPublished(ctx context.Context, svc, version string) (zklayout.Torrent, []byte, error) {
	p := t.Layout.Torrent(svc, version)
	for {
		tor, meta, err := t.Read(ctx, svc, version)
		if !errors.Is(err, ErrNotPublished) {
			return tor, meta, err
		}
		exists, _, w, err := t.ZK.ExistsW(ctx, p)
		if err != nil {
			return tor, nil, err
		}
		if exists {
			// Created but the summary is not written yet: wait for its data.
			var data []byte
			data, _, w, err = t.ZK.GetW(ctx, p)
			if errors.Is(err, zkclient.ErrNoNode) || (err == nil && len(data) > 0) {
				continue
			}
			if err != nil {
				return tor, nil, err
			}
		}
		if err := w.Wait(ctx); err != nil {
			return tor, nil, err
		}
	}
}

// ReportProgress creates or updates node's ephemeral progress znode for svc.
func (t Tracker) ReportProgress(ctx context.Context, svc string, p zklayout.Progress) error {
	data, err := zklayout.Encode(&p)
	if err != nil {
		return err
	}
	path := t.Layout.ProgressNode(svc, p.Node)
	if _, err := t.ZK.Set(ctx, path, data, -1); !errors.Is(err, zkclient.ErrNoNode) {
		return err
	}
	if err := t.ZK.EnsurePath(ctx, t.Layout.ProgressService(svc)); err != nil {
		return err
	}
	_, err = t.ZK.Create(ctx, path, data, zkclient.Ephemeral)
	return err
}

// ClearProgress removes node's progress znode for svc.
func (t Tracker) ClearProgress(ctx context.Context, svc, node string) error {
	if err := t.ZK.Delete(ctx, t.Layout.ProgressNode(svc, node), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
		return err
	}
	return nil
}
