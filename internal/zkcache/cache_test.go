package zkcache_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/zkcache"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

func dial(t *testing.T, e *zkserver.Ensemble) *zkclient.Client {
	t.Helper()
	c, err := zkclient.Dial(context.Background(), zkclient.Config{Servers: zkclient.ParseServers(e.Connect()),
		SessionTimeout: 10 * time.Second, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func start(t *testing.T) (*zkserver.Ensemble, *zkclient.Client) {
	t.Helper()
	e, err := zkserver.Start(context.Background(), t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e, dial(t, e)
}

// pass reads every child of /svc the way a status pass does, returning child -> data.
func pass(t *testing.T, c *zkcache.Cache) map[string]string {
	t.Helper()
	ctx := context.Background()
	names, _, err := c.Children(ctx, "/svc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		data, _, err := c.Get(ctx, "/svc/"+n)
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[n] = string(data)
	}
	return out
}

func reads(c *zkclient.Client) int64 { return c.Traffic().Reads }

// A pass after k changes costs about k requests, whatever the number of children; its answers
// are those of a direct read.
func TestPassCostsWhatChanged(t *testing.T) {
	_, zk := start(t)
	ctx := context.Background()
	const n = 200
	if err := zk.EnsurePath(ctx, "/svc"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := zk.Create(ctx, fmt.Sprintf("/svc/n%03d", i), []byte("v1"), zkclient.Persistent); err != nil {
			t.Fatal(err)
		}
	}
	c := zkcache.New(zk, 0)
	before := reads(zk)
	if got := pass(t, c); len(got) != n {
		t.Fatalf("first pass read %d children, want %d", len(got), n)
	}
	if r := reads(zk) - before; r != n+1 {
		t.Fatalf("first pass: %d requests, want %d (one listing, one read per child)", r, n+1)
	}

	before = reads(zk)
	pass(t, c)
	if r := reads(zk) - before; r != 0 {
		t.Fatalf("unchanged pass: %d requests, want 0", r)
	}

	// Three changes by this client: its own write's event arrives before the write's answer.
	if _, err := zk.Set(ctx, "/svc/n007", []byte("v2"), -1); err != nil {
		t.Fatal(err)
	}
	if err := zk.Delete(ctx, "/svc/n008", -1); err != nil {
		t.Fatal(err)
	}
	if _, err := zk.Create(ctx, "/svc/new", []byte("v2"), zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	before = reads(zk)
	got := pass(t, c)
	if r := reads(zk) - before; r != 3 {
		t.Fatalf("pass after a set, a delete and a create: %d requests, want 3 (the listing, the changed child, the new one)", r)
	}
	if got["n007"] != "v2" || got["new"] != "v2" || len(got) != n {
		t.Fatalf("pass after changes: n007=%q new=%q, %d children; want v2, v2, %d", got["n007"], got["new"], len(got), n)
	}
	if _, ok := got["n008"]; ok {
		t.Fatal("a deleted child is still served")
	}
	if st := c.Stats(); st.Entries != n+1 {
		t.Fatalf("cache holds %d entries, want %d (deleted children pruned)", st.Entries, n+1)
	}
}

// Another session's change reaches the cache through the watch: the cache never answers with
// data older than the event the client received.
func TestOtherSessionsChange(t *testing.T) {
	e, zk := start(t)
	other := dial(t, e)
	ctx := context.Background()
	c := cachedKey(t, zk)
	// A watch of our own (set after the cache's: the library delivers an event to a path's
	// watchers in the order they were set) on the same znode tells when the client has the event.
	_, _, w, err := zk.GetW(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Set(ctx, "/k", []byte("2"), -1); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := w.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	if d, st, err := c.Get(ctx, "/k"); err != nil || string(d) != "2" || st.Version != 1 {
		t.Fatalf("after the event: get = %q (version %d), %v; want 2 (version 1)", d, st.Version, err)
	}
}

// Without a session the cache answers nothing from memory: reads fail as direct reads do.
func TestNoSessionNoAnswers(t *testing.T) {
	e, zk := start(t)
	ctx := context.Background()
	c := cachedKey(t, zk)
	e.Stop()
	waitConnected(t, zk, false)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if d, _, err := c.Get(rctx, "/k"); err == nil {
		t.Fatalf("get without a session answered %q from memory", d)
	}
}

// Past its bound the cache reads through, uncached, and still answers right.
func TestBound(t *testing.T) {
	_, zk := start(t)
	ctx := context.Background()
	if err := zk.EnsurePath(ctx, "/svc"); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := zk.Create(ctx, fmt.Sprintf("/svc/n%d", i), []byte("x"), zkclient.Persistent); err != nil {
			t.Fatal(err)
		}
	}
	c := zkcache.New(zk, 4)
	pass(t, c)
	if st := c.Stats(); st.Entries > 4 {
		t.Fatalf("cache holds %d entries, bound 4", st.Entries)
	}
	before := zk.Traffic().Watches
	got := pass(t, c)
	if w := zk.Traffic().Watches - before; w != 0 {
		t.Fatalf("a pass past the bound set %d watches; reads past it set none (nothing would ever remove them)", w)
	}
	if len(got) != 10 {
		t.Fatalf("bounded cache answered %v", got)
	}
}

// After a new connection the cache starts empty: the library sets its watches again then, and
// their events for what changed meanwhile may come after a read answered from memory.
func TestReconnectStartsEmpty(t *testing.T) {
	e, zk := start(t)
	ctx := context.Background()
	c := cachedKey(t, zk)
	srv := e.Servers[0]
	srv.Stop()
	waitConnected(t, zk, false)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, zk, true)
	before := reads(zk)
	if d, _, err := c.Get(ctx, "/k"); err != nil || string(d) != "1" {
		t.Fatalf("get after reconnecting = %q, %v", d, err)
	}
	if r := reads(zk) - before; r != 1 {
		t.Fatalf("get after reconnecting: %d requests, want 1 (nothing answered from memory)", r)
	}
}

func waitConnected(t *testing.T, zk *zkclient.Client, want bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for zk.SessionStats().Connected != want {
		if time.Now().After(deadline) {
			t.Fatalf("client connected = %v after a minute, want %v", !want, want)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// cachedKey creates /k holding "1" and returns a cache that has read it.
func cachedKey(t *testing.T, zk *zkclient.Client) *zkcache.Cache {
	t.Helper()
	ctx := context.Background()
	if _, err := zk.Create(ctx, "/k", []byte("1"), zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	c := zkcache.New(zk, 0)
	if d, _, err := c.Get(ctx, "/k"); err != nil || string(d) != "1" {
		t.Fatalf("get = %q, %v", d, err)
	}
	return c
}
