package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
)

// maxTombstones bounds the deletions a Store remembers for clients that are behind; past it
// they are forgotten and such a client is sent a fresh snapshot instead.
const maxTombstones = 1024

// Store holds the dashboard's objects as JSON by key ("rd/<name>", "ns/<name>", "ev/<ns>/<name>"),
// each with the sequence number of its last change, so a client that saw everything up to n
// asks for the changes after n. Deleted objects leave a tombstone until maxTombstones pile up.
type Store struct {
	mu      sync.Mutex
	seq     uint64
	items   map[string]*item
	dead    int
	floor   uint64 // tombstones at or below floor were forgotten
	changed chan struct{}
	meta    Meta
}

type item struct {
	seq  uint64
	data json.RawMessage // nil: deleted
}

// Meta is what the page is told besides the objects: what the user may see and do, and
// whether the first listing is in.
type Meta struct {
	Access Access `json:"access"`
	// Synced is true once every allowed kind's first listing is in the Store.
	Synced bool `json:"synced"`
	// Error is a problem the page shows in its header (empty: none).
	Error string `json:"error,omitempty"`
}

// Change is one object's new JSON, or its deletion (Data nil, omitted).
type Change struct {
	Key  string          `json:"k"`
	Data json.RawMessage `json:"v,omitempty"`
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{items: map[string]*item{}, changed: make(chan struct{})}
}

func (s *Store) bump() {
	s.seq++
	close(s.changed)
	s.changed = make(chan struct{})
}

// Put stores v's JSON under key; an unchanged object is not a change.
func (s *Store) Put(key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("dashboard: encode %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[key]
	if it != nil && it.data != nil && bytes.Equal(it.data, data) {
		return nil
	}
	if it != nil && it.data == nil {
		s.dead--
	}
	s.bump()
	s.items[key] = &item{seq: s.seq, data: data}
	return nil
}

// Delete removes key, leaving a tombstone for clients that saw it.
func (s *Store) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[key]
	if it == nil || it.data == nil {
		return
	}
	s.bump()
	s.items[key] = &item{seq: s.seq}
	s.dead++
	if s.dead > maxTombstones {
		for k, it := range s.items {
			if it.data == nil {
				delete(s.items, k)
			}
		}
		s.dead, s.floor = 0, s.seq
	}
}

// SetMeta replaces the Meta (a change like any other).
func (s *Store) SetMeta(update func(*Meta)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.meta
	update(&s.meta)
	if s.meta != before {
		s.bump()
	}
}

// Meta returns the current Meta.
func (s *Store) Meta() Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.meta
}

// Since returns the changes after seq (sorted by key), the sequence number they bring the
// caller to, and a channel closed at the next change. full says the changes are a snapshot
// (every live object; the caller drops what it had): asked for seq 0, or for a seq older than
// the tombstones the Store still remembers.
func (s *Store) Since(seq uint64) (changes []Change, now uint64, full bool, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	full = seq == 0 || seq < s.floor
	for k, it := range s.items {
		if full && it.data == nil || !full && it.seq <= seq {
			continue
		}
		changes = append(changes, Change{Key: k, Data: it.data})
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Key < changes[j].Key })
	return changes, s.seq, full, s.changed
}

// Len is the number of live objects.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items) - s.dead
}
