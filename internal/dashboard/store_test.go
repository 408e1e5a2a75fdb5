package dashboard

import (
	"fmt"
	"testing"
)

func keys(cs []Change) map[string]string {
	out := map[string]string{}
	for _, c := range cs {
		out[c.Key] = string(c.Data)
	}
	return out
}

func TestStoreChangesSince(t *testing.T) {
	s := NewStore()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Put("rd/a", map[string]int{"x": 1}))
	must(s.Put("rd/b", map[string]int{"x": 1}))
	snap, seq, full, changed := s.Since(0)
	if !full || len(snap) != 2 || snap[0].Key != "rd/a" || snap[1].Key != "rd/b" {
		t.Fatalf("snapshot %v full=%v: want rd/a, rd/b", snap, full)
	}
	// An unchanged object is no change: nothing wakes the page.
	must(s.Put("rd/a", map[string]int{"x": 1}))
	select {
	case <-changed:
		t.Fatal("an unchanged Put counted as a change")
	default:
	}
	must(s.Put("rd/a", map[string]int{"x": 2}))
	s.Delete("rd/b")
	s.Delete("rd/never")
	<-changed
	cs, seq2, full, _ := s.Since(seq)
	got := keys(cs)
	if full || len(cs) != 2 || got["rd/a"] != `{"x":2}` || got["rd/b"] != "" {
		t.Fatalf("changes %v full=%v: want rd/a updated and rd/b deleted", got, full)
	}
	if cs, _, _, _ := s.Since(seq2); len(cs) != 0 {
		t.Fatalf("changes after the latest seq: %v", cs)
	}
	// A new page gets the live objects only.
	if snap, _, _, _ := s.Since(0); len(snap) != 1 || snap[0].Key != "rd/a" {
		t.Fatalf("snapshot after a delete: %v", snap)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
}

func TestStoreForgetsTombstonesAndResyncs(t *testing.T) {
	s := NewStore()
	_ = s.Put("rd/keep", 1)
	_, seq, _, _ := s.Since(0)
	for i := range maxTombstones + 1 {
		k := fmt.Sprintf("ev/default/e%d", i)
		_ = s.Put(k, i)
		s.Delete(k)
	}
	// A page that is behind the forgotten tombstones cannot be told what went: it gets a
	// snapshot instead.
	cs, _, full, _ := s.Since(seq)
	if !full || len(cs) != 1 || cs[0].Key != "rd/keep" {
		t.Fatalf("changes %v full=%v: want a snapshot of rd/keep", keys(cs), full)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
}

func TestStoreMetaIsAChange(t *testing.T) {
	s := NewStore()
	_, _, _, changed := s.Since(0)
	s.SetMeta(func(m *Meta) {})
	select {
	case <-changed:
		t.Fatal("an unchanged Meta counted as a change")
	default:
	}
	s.SetMeta(func(m *Meta) { m.Synced = true })
	<-changed
	if !s.Meta().Synced {
		t.Fatal("Meta not kept")
	}
}
