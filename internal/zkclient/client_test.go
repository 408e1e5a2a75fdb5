package zkclient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

func start(t *testing.T) (*zkserver.Ensemble, *zkclient.Client) {
	t.Helper()
	ctx := context.Background()
	e, err := zkserver.Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(e.Connect()), SessionTimeout: 10 * time.Second, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return e, c
}

func TestOperationsAndErrors(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	if err := c.EnsurePath(ctx, "/a/b/c"); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsurePath(ctx, "/a/b/c"); err != nil {
		t.Fatalf("EnsurePath is not idempotent: %v", err)
	}
	if _, err := c.Create(ctx, "/a/b/c", nil, zkclient.Persistent); !errors.Is(err, zkclient.ErrNodeExists) {
		t.Fatalf("create existing: %v", err)
	}
	if _, _, err := c.Get(ctx, "/nope"); !errors.Is(err, zkclient.ErrNoNode) {
		t.Fatalf("get missing: %v", err)
	}
	seq, err := c.Create(ctx, "/a/q-", []byte("x"), zkclient.EphemeralSequential)
	if err != nil || len(seq) != len("/a/q-0000000000") {
		t.Fatalf("sequential create = %q, %v", seq, err)
	}
	// A versioned multi fails as a whole on a stale version.
	if _, err := c.Set(ctx, "/a/b", []byte("1"), -1); err != nil {
		t.Fatal(err)
	}
	err = c.Multi(ctx, zkclient.SetOp("/a/b", []byte("2"), 0), zkclient.DeleteOp("/a/b/c", -1))
	if !errors.Is(err, zkclient.ErrBadVersion) {
		t.Fatalf("stale multi: %v", err)
	}
	if ok, _ := c.Exists(ctx, "/a/b/c"); !ok {
		t.Fatal("a failed multi applied part of its ops")
	}
	if err := c.Multi(ctx, zkclient.SetOp("/a/b", []byte("2"), 1), zkclient.DeleteOp("/a/b/c", -1)); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTree(ctx, "/a"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Exists(ctx, "/a"); ok {
		t.Fatal("DeleteTree left /a")
	}
}

func TestWatchFiresAndCounts(t *testing.T) {
	_, c := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.EnsurePath(ctx, "/w"); err != nil {
		t.Fatal(err)
	}
	_, _, w, err := c.ChildrenW(ctx, "/w")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, "/w/x", nil, zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if c.WatchesFired() != 1 {
		t.Fatalf("WatchesFired = %d", c.WatchesFired())
	}
}

// The session survives a server restart shorter than the session timeout: ephemerals stay.
func TestServerRestartKeepsSession(t *testing.T) {
	e, c := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Create(ctx, "/eph", nil, zkclient.Ephemeral); err != nil {
		t.Fatal(err)
	}
	sess := c.Session()
	if st := c.SessionStats(); !st.Connected || st.Reconnects != 0 || st.Expirations != 0 {
		t.Fatalf("session stats after dial: %+v", st)
	}
	e.Servers[0].Stop()
	waitStats(t, c, "disconnected", func(st zkclient.SessionStats) bool { return !st.Connected })
	if err := e.Servers[0].Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.Servers[0].WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := c.Exists(ctx, "/eph")
		if err == nil {
			if !ok {
				t.Fatal("ephemeral znode lost across a short server restart")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval while the client reconnects
	}
	select {
	case <-sess.Done:
		t.Fatal("session reported expired")
	default:
	}
	waitStats(t, c, "reconnected once", func(st zkclient.SessionStats) bool {
		return st.Connected && st.Reconnects == 1 && st.Expirations == 0
	})
	c.Close()
	if st := c.SessionStats(); st.Connected {
		t.Fatalf("session stats after Close: %+v", st)
	}
}

// waitStats polls the session stats until cond holds (session events arrive asynchronously).
func waitStats(t *testing.T, c *zkclient.Client, what string, cond func(zkclient.SessionStats) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for st := c.SessionStats(); !cond(st); st = c.SessionStats() {
		if time.Now().After(deadline) {
			t.Fatalf("session stats not %s: %+v", what, st)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}
