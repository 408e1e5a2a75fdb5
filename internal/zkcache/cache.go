// Package zkcache serves reads of znodes from memory while ZooKeeper has not said they changed.
//
// Each Get or Children that reaches ZooKeeper sets a watch (GetW, ChildrenW) and keeps the
// answer with it; later reads of the same path are answered from memory until that watch
// fires, and then read (and watched) again. A pass over a subtree that changed in k places
// costs about k requests instead of one per znode: the operator's status pass at N nodes costs
// O(what changed), not O(N) (issue 12). It is Curator's PathChildrenCache done lazily: nothing
// is read until asked for, and nothing runs in the background.
//
// The answers are as fresh as a direct read issued at the same moment could be: ZooKeeper
// delivers a watch event to the client before any response that reflects the change, and a
// watch is checked (without blocking) on every read. While the client has no session the
// cache is bypassed, so reads fail as direct reads would rather than answer from memory; and
// after every new connection it starts empty (the watches the library sets again on a new
// connection fire for what changed meanwhile, but perhaps after a read answered from memory).
package zkcache

import (
	"context"
	"path"
	"slices"
	"sync"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
)

// Source is what the cache reads through: *zkclient.Client.
type Source interface {
	GetW(ctx context.Context, p string) ([]byte, zkclient.Stat, zkclient.Watch, error)
	ChildrenW(ctx context.Context, p string) ([]string, zkclient.Stat, zkclient.Watch, error)
	Get(ctx context.Context, p string) ([]byte, zkclient.Stat, error)
	Children(ctx context.Context, p string) ([]string, zkclient.Stat, error)
	SessionStats() zkclient.SessionStats
}

// DefaultMaxEntries bounds the znodes kept (data and child lists together): 131,072, enough
// for every node of several 10,000-node services (a registration or staging child is a few
// hundred bytes). Past it, reads go to ZooKeeper uncached, and set no watch.
const DefaultMaxEntries = 1 << 17

// Cache answers Get and Children (rollout.Client) from memory while their watches hold. It is
// safe for concurrent use.
type Cache struct {
	src Source
	max int

	mu   sync.Mutex
	data map[string]*dataEntry
	kids map[string]*childEntry
	// under indexes data entries by parent, for pruning: parent -> child name -> true.
	under map[string]map[string]bool
	hits  int64
	// conns is the client's count of (re-)established connections the entries were read on.
	conns int64
}

type dataEntry struct {
	data []byte
	stat zkclient.Stat
	w    zkclient.Watch
}

type childEntry struct {
	names []string
	stat  zkclient.Stat
	w     zkclient.Watch
}

// New returns a cache reading through src, keeping at most max entries (0: DefaultMaxEntries).
func New(src Source, max int) *Cache {
	if max <= 0 {
		max = DefaultMaxEntries
	}
	return &Cache{src: src, max: max, data: map[string]*dataEntry{}, kids: map[string]*childEntry{},
		under: map[string]map[string]bool{}}
}

// fired reports whether w has fired (or was invalidated with its session), without blocking.
// A fired watch's channel is closed after its one event, so every later check sees it too.
func fired(w zkclient.Watch) bool {
	select {
	case _, ok := <-w.C():
		if ok {
			w.Fired()
		}
		return true
	default:
		return false
	}
}

// usable reports whether the client has a session, and empties the cache if it connected
// again since the entries were read. Called with mu held.
func (c *Cache) usable() bool {
	st := c.src.SessionStats()
	if !st.Connected {
		return false
	}
	if st.Reconnects != c.conns {
		c.conns = st.Reconnects
		clear(c.data)
		clear(c.kids)
		clear(c.under)
	}
	return true
}

// full reports whether a new entry would pass the bound. Called with mu held.
func (c *Cache) full() bool { return len(c.data)+len(c.kids) >= c.max }

// Get returns p's data and stat, from memory if p's watch has not fired since it was read.
func (c *Cache) Get(ctx context.Context, p string) ([]byte, zkclient.Stat, error) {
	c.mu.Lock()
	if !c.usable() || (c.data[p] == nil && c.full()) {
		c.mu.Unlock()
		return c.src.Get(ctx, p)
	}
	if e := c.data[p]; e != nil {
		if !fired(e.w) {
			c.hits++
			c.mu.Unlock()
			// Copies: callers may sort or change what they get.
			return slices.Clone(e.data), e.stat, nil
		}
		c.forget(p)
	}
	c.mu.Unlock()
	data, st, w, err := c.src.GetW(ctx, p)
	if err != nil {
		// No watch is set on a missing znode's data: nothing to keep.
		return data, st, err
	}
	c.mu.Lock()
	if c.data[p] != nil || !c.full() {
		c.data[p] = &dataEntry{data: slices.Clone(data), stat: st, w: w}
		dir, name := path.Split(p)
		dir = path.Clean(dir)
		if c.under[dir] == nil {
			c.under[dir] = map[string]bool{}
		}
		c.under[dir][name] = true
	}
	c.mu.Unlock()
	return data, st, nil
}

// Children returns p's children and stat, from memory if p's child watch has not fired since
// they were listed. A fresh listing also forgets the data of children no longer listed.
func (c *Cache) Children(ctx context.Context, p string) ([]string, zkclient.Stat, error) {
	c.mu.Lock()
	if !c.usable() || (c.kids[p] == nil && c.full()) {
		c.mu.Unlock()
		return c.src.Children(ctx, p)
	}
	if e := c.kids[p]; e != nil {
		if !fired(e.w) {
			c.hits++
			c.mu.Unlock()
			return slices.Clone(e.names), e.stat, nil
		}
		delete(c.kids, p)
	}
	c.mu.Unlock()
	names, st, w, err := c.src.ChildrenW(ctx, p)
	if err != nil {
		return names, st, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(p, names)
	if c.kids[p] != nil || !c.full() {
		c.kids[p] = &childEntry{names: slices.Clone(names), stat: st, w: w}
	}
	return names, st, nil
}

// prune forgets the data of p's children that are not in names (deleted znodes whose watch
// fired, and that nobody will read again). Called with mu held.
func (c *Cache) prune(p string, names []string) {
	held := c.under[p]
	if len(held) == 0 {
		return
	}
	keep := make(map[string]bool, len(names))
	for _, n := range names {
		keep[n] = true
	}
	for n := range held {
		if !keep[n] {
			c.forget(path.Join(p, n))
		}
	}
}

// forget drops p's data entry. Called with mu held.
func (c *Cache) forget(p string) {
	delete(c.data, p)
	dir, name := path.Split(p)
	dir = path.Clean(dir)
	if held := c.under[dir]; held != nil {
		delete(held, name)
		if len(held) == 0 {
			delete(c.under, dir)
		}
	}
}

// Stats are the cache's counters.
type Stats struct {
	// Entries is the number of znodes (data and child lists) held; Hits the reads answered
	// from memory.
	Entries int
	Hits    int64
}

// Stats reports the entries held and the reads answered from memory.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Entries: len(c.data) + len(c.kids), Hits: c.hits}
}
