package seeder

import (
	"context"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// followSwarm keeps t's list of admitted peers in step with its swarm in ZooKeeper (the
// peers/<infohash> entries other than the seeder's own) until ctx ends: the seeder's client
// runs with p2p.Config.OnlyListedPeers, so only the nodes registered for the version may
// download it, and a node whose entry is gone (unregistered, session ended) is refused from
// then on and its connections for the torrent are closed.
//
// Peers that join are dialed too (AddPeers), not only admitted: a node that dials the seeder
// before the seeder has read its entry is refused once and does not redial, but the seeder's own
// dial then reaches it (the node lists the seeder before it dials), so one direction always
// connects.
func (s *Seeder) followSwarm(ctx context.Context, t *p2p.Torrent, log logr.Logger) {
	ih := t.MetaInfo().InfoHash
	// addrs by node name: the whole swarm as last read; the list AllowPeers gets.
	addrs := map[string]string{}
	allow := func() {
		peers := make([]p2p.Peer, 0, len(addrs))
		for _, n := range slices.Sorted(maps.Keys(addrs)) {
			peers = append(peers, p2p.Peer{Addr: addrs[n]})
		}
		if err := t.AllowPeers(peers); err != nil {
			log.Info("some peers of the swarm have no usable address", "err", err.Error())
		}
		if s.swarmChanged != nil {
			s.swarmChanged(ih, peers)
		}
	}
	for attempt := 1; ; attempt++ {
		err := s.cfg.Tracker.FollowChanges(ctx, ih, s.cfg.Name, func(joined []zklayout.Peer) {
			var fresh []p2p.Peer
			for _, p := range joined {
				a := peerAddr(p)
				addrs[p.Node] = a
				fresh = append(fresh, p2p.Peer{Addr: a})
			}
			allow()
			if err := t.AddPeers(fresh); err != nil {
				log.V(1).Info("some peers could not be dialed", "err", err.Error())
			}
		}, func(left []string) {
			for _, n := range left {
				delete(addrs, n)
			}
			allow()
		})
		if ctx.Err() != nil {
			return
		}
		// The session was lost or ZooKeeper failed: follow again once it is back, from a fresh
		// read. Until then the list stays as it was.
		wait := backoff(s.cfg.MinBackoff, s.cfg.MaxBackoff, attempt)
		log.Error(err, "following the swarm failed; retrying", "infoHash", ih, "retryIn", wait.Round(time.Millisecond).String())
		clear(addrs)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// peerAddr is the ip:port a swarm entry names.
func peerAddr(p zklayout.Peer) string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }
