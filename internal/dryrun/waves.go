// Package dryrun works out, without changing anything, how a service's rollout would go under
// its gates: the waves of nodes that may be down at once, and a rough duration from the last
// rollout. It talks to no API server and no ZooKeeper; kubectl rollkeeper plan feeds it what
// it read.
package dryrun

import (
	"fmt"
	"sort"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Node is one online node of a service.
type Node struct {
	Name string
	// Domain is the node's value of the topology key ("" without the label, or without a
	// topology).
	Domain string
	// OnTarget: the node already runs the target version, so it does not upgrade (it still
	// counts online for the quorums).
	OnTarget bool
}

// Input is a service's online nodes and its resolved gates.
type Input struct {
	// Online are the nodes that count online; the caller leaves the others out.
	Online []Node
	// MinAvailable is the service's resolved quorum.
	MinAvailable int
	// MaxUnavailable caps a wave (0: no cap).
	MaxUnavailable int
	// Topology takes the domains one at a time, in the order of their names (nil: none).
	Topology *zklayout.Topology
	// Canary is how many nodes go before the service waits for its promotion (0: none, or
	// promoted already).
	Canary int
}

// Wave is a set of nodes that may be down at once; with a topology, all of one domain.
type Wave struct {
	Domain string
	Nodes  []string
}

// Blocked is a domain whose own quorum leaves no node free to go.
type Blocked struct {
	Domain       string
	Online       int
	MinAvailable int
	// Nodes are its nodes that would upgrade.
	Nodes []string
}

// Result is how the service's rollout would go.
type Result struct {
	Waves []Wave
	// Skipped are the nodes already on the target, by name.
	Skipped []string
	// NoRoom, when set, says why no node can go at all (the service's quorum).
	NoRoom string
	// Blocked is the first domain whose quorum holds it (nil: none). The rollout stops there:
	// the agents take domains strictly in name order, so a later domain's nodes wait behind
	// it (rollout.Gates requeues them), and they are in Held instead of in a wave.
	Blocked *Blocked
	// Held are the nodes of the domains after Blocked, by domain then name.
	Held []string
	// Size is the most nodes a wave takes before a domain's own quorum (0 with NoRoom or
	// nothing to do).
	Size int
	// CanaryWaves is how many of the first waves are the canary phase: the service waits for
	// its promotion after them (0: no canary phase).
	CanaryWaves int
}

// Pending is how many nodes would upgrade but are in no wave (blocked or held).
func (r Result) Pending() int {
	n := len(r.Held)
	if r.Blocked != nil {
		n += len(r.Blocked.Nodes)
	}
	return n
}

// Waves splits the nodes that are not on the target into waves. A wave takes at most
// online - minAvailable nodes (the quorum: the nodes of one wave are back before the next goes,
// so the room is the same for every wave), at most maxUnavailable, and with a topology at most
// maxUnavailablePerDomain nodes of one domain and no more than the domain's online nodes minus
// its own quorum. Domains go one at a time in the order of their names ("" first), nodes by
// name within a domain: the real order within a domain is the order the nodes stage in, which
// no one knows ahead.
func Waves(in Input) Result {
	r := waves(in)
	if in.Canary <= 0 {
		return r
	}
	// The canaries are the first Canary nodes of the waves: a wave that would cross that line
	// is cut there (the agents cap a batch to the canaries left).
	left := in.Canary
	var out []Wave
	for i, w := range r.Waves {
		if left == 0 {
			out = append(out, r.Waves[i:]...)
			break
		}
		if len(w.Nodes) > left {
			out = append(out, Wave{Domain: w.Domain, Nodes: w.Nodes[:left:left]}, Wave{Domain: w.Domain, Nodes: w.Nodes[left:]})
			left = 0
			r.CanaryWaves = len(out) - 1
			out = append(out, r.Waves[i+1:]...)
			break
		}
		out = append(out, w)
		left -= len(w.Nodes)
		r.CanaryWaves = len(out)
	}
	r.Waves = out
	return r
}

func waves(in Input) Result {
	var r Result
	nodes := append([]Node(nil), in.Online...)
	topo := in.Topology
	sort.Slice(nodes, func(i, j int) bool {
		if topo != nil && nodes[i].Domain != nodes[j].Domain {
			return nodes[i].Domain < nodes[j].Domain
		}
		return nodes[i].Name < nodes[j].Name
	})
	var pending []Node
	for _, n := range nodes {
		if n.OnTarget {
			r.Skipped = append(r.Skipped, n.Name)
		} else {
			pending = append(pending, n)
		}
	}
	sort.Strings(r.Skipped)
	if len(pending) == 0 {
		return r
	}
	room := len(nodes) - in.MinAvailable
	if room <= 0 {
		r.NoRoom = fmt.Sprintf("no wave: minAvailable %d leaves no room with %d online", in.MinAvailable, len(nodes))
		return r
	}
	size := room
	if in.MaxUnavailable > 0 {
		size = min(size, in.MaxUnavailable)
	}
	if topo == nil {
		r.Size = size
		r.Waves = chunk("", names(pending), size)
		return r
	}
	size = min(size, max(topo.MaxUnavailablePerDomain, 1))
	r.Size = size
	online := map[string]int{}
	for _, n := range nodes {
		online[n.Domain]++
	}
	// pending is sorted by domain: walk it a domain at a time.
	for i := 0; i < len(pending); {
		d := pending[i].Domain
		j := i
		for j < len(pending) && pending[j].Domain == d {
			j++
		}
		group := names(pending[i:j])
		i = j
		if r.Blocked != nil {
			r.Held = append(r.Held, group...)
			continue
		}
		m := topo.MinAvailableIn(d)
		free := online[d] - m
		if free <= 0 {
			r.Blocked = &Blocked{Domain: d, Online: online[d], MinAvailable: m, Nodes: group}
			continue
		}
		r.Waves = append(r.Waves, chunk(d, group, min(size, free))...)
	}
	return r
}

func names(ns []Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

// chunk cuts names into waves of at most size (size >= 1) nodes.
func chunk(domain string, names []string, size int) []Wave {
	var out []Wave
	for len(names) > 0 {
		k := min(size, len(names))
		out = append(out, Wave{Domain: domain, Nodes: names[:k:k]})
		names = names[k:]
	}
	return out
}
