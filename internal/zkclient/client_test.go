package zkclient_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/go-zookeeper/zk"

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

// With digest auth the znodes a client creates (directly or in a Multi) are readable by anyone
// and changed only by the same credentials, also after the client reconnects (the library sends
// the credentials again); without auth they stay open to all.
func TestDigestAuthGuardsWrites(t *testing.T) {
	e, open := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dial := func(auth string) *zkclient.Client {
		t.Helper()
		c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(e.Connect()), SessionTimeout: 10 * time.Second, Auth: auth, Logger: testr.New(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	raw, _, err := zk.Connect(zkclient.ParseServers(e.Connect()), 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// ZooKeeper shows digests (not "x") only to a client with ADMIN on the znode.
	if err := raw.AddAuth("digest", []byte("rk:s3cret")); err != nil {
		t.Fatal(err)
	}
	aclOf := func(p string) []zk.ACL {
		t.Helper()
		acl, _, err := raw.GetACL(p)
		if err != nil {
			t.Fatalf("get ACL of %s: %v", p, err)
		}
		return acl
	}

	if err := open.EnsurePath(ctx, "/open/x"); err != nil {
		t.Fatal(err)
	}
	if got, want := aclOf("/open/x"), zk.WorldACL(zk.PermAll); !reflect.DeepEqual(got, want) {
		t.Errorf("ACL without auth %+v, want %+v", got, want)
	}

	owner := dial("rk:s3cret")
	if err := owner.EnsurePath(ctx, "/rk/deploy"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Create(ctx, "/rk/deploy/x", []byte("1"), zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	if err := owner.Multi(ctx, zkclient.CreateOp("/rk/deploy/y", nil, zkclient.Persistent)); err != nil {
		t.Fatal(err)
	}
	want := []zk.ACL{{Perms: zk.PermRead, Scheme: "world", ID: "anyone"}, zk.DigestACL(zk.PermAll, "rk", "s3cret")[0]}
	for _, p := range []string{"/rk", "/rk/deploy", "/rk/deploy/x", "/rk/deploy/y"} {
		if got := aclOf(p); !reflect.DeepEqual(got, want) {
			t.Errorf("ACL of %s with auth %+v, want %+v", p, got, want)
		}
	}

	for _, c := range []*zkclient.Client{open, dial("rk:wrong")} {
		if data, _, err := c.Get(ctx, "/rk/deploy/x"); err != nil || string(data) != "1" {
			t.Errorf("read by another identity = %q, %v", data, err)
		}
		_, err := c.Set(ctx, "/rk/deploy/x", []byte("2"), -1)
		if !errors.Is(err, zkclient.ErrNoAuth) || !strings.Contains(err.Error(), "--zk-auth") {
			t.Errorf("set by another identity: %v, want %v", err, zkclient.ErrNoAuth)
		}
		if _, err := c.Create(ctx, "/rk/deploy/z", nil, zkclient.Persistent); !errors.Is(err, zkclient.ErrNoAuth) {
			t.Errorf("create by another identity: %v", err)
		}
		if err := c.Multi(ctx, zkclient.DeleteOp("/rk/deploy/y", -1)); !errors.Is(err, zkclient.ErrNoAuth) {
			t.Errorf("multi delete by another identity: %v", err)
		}
	}
	same := dial("rk:s3cret")
	if _, err := same.Set(ctx, "/rk/deploy/x", []byte("2"), -1); err != nil {
		t.Errorf("set with the same credentials: %v", err)
	}
	if err := same.Delete(ctx, "/rk/deploy/y", -1); err != nil {
		t.Errorf("delete with the same credentials: %v", err)
	}

	// After a reconnect the owner still writes: its credentials went with the new connection.
	e.Servers[0].Stop()
	waitStats(t, owner, "disconnected", func(st zkclient.SessionStats) bool { return !st.Connected })
	if err := e.Servers[0].Start(); err != nil {
		t.Fatal(err)
	}
	waitStats(t, owner, "reconnected", func(st zkclient.SessionStats) bool { return st.Connected })
	if _, err := owner.Set(ctx, "/rk/deploy/x", []byte("3"), -1); err != nil {
		t.Errorf("set after a reconnect: %v", err)
	}
}

// Traffic counts each request once as it is sent: reads, watches (the W variants, also
// reads), writes (a Multi is one, its ops counted apart), and the composite helpers through
// the calls they make.
func TestTrafficCounts(t *testing.T) {
	_, c := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	step := func(what string, want zkclient.Traffic, f func()) {
		t.Helper()
		before := c.Traffic()
		f()
		if got := c.Traffic().Sub(before); got != want {
			t.Fatalf("%s: traffic %+v, want %+v", what, got, want)
		}
	}
	step("EnsurePath of a new 3-deep path", zkclient.Traffic{Reads: 1, Writes: 3}, func() {
		if err := c.EnsurePath(ctx, "/t/x/y"); err != nil {
			t.Fatal(err)
		}
	})
	// Again: one read, no write (a create that fails still goes through the leader's log).
	step("EnsurePath of a path that exists", zkclient.Traffic{Reads: 1}, func() {
		if err := c.EnsurePath(ctx, "/t/x/y"); err != nil {
			t.Fatal(err)
		}
	})
	step("one of each read", zkclient.Traffic{Reads: 3}, func() {
		_, _, _ = c.Get(ctx, "/t/x")
		_, _ = c.Exists(ctx, "/t/nope") // failed requests count too
		_, _, _ = c.Children(ctx, "/t")
	})
	var w zkclient.Watch
	step("one of each watch", zkclient.Traffic{Reads: 3, Watches: 3}, func() {
		_, _, _, _ = c.GetW(ctx, "/t/x")
		_, _, _, _ = c.ExistsW(ctx, "/t/new")
		_, _, w, _ = c.ChildrenW(ctx, "/t/x")
	})
	step("a create, a set and the watch it fires", zkclient.Traffic{Writes: 2, WatchesFired: 1}, func() {
		if _, err := c.Create(ctx, "/t/x/z", nil, zkclient.Persistent); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Set(ctx, "/t/x", []byte("1"), -1); err != nil {
			t.Fatal(err)
		}
		if err := w.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	})
	step("a multi of three ops", zkclient.Traffic{Writes: 1, MultiOps: 3}, func() {
		if err := c.Multi(ctx, zkclient.CheckOp("/t", -1), zkclient.CreateOp("/t/m", nil, zkclient.Persistent),
			zkclient.DeleteOp("/t/m", -1)); err != nil {
			t.Fatal(err)
		}
	})
	// Then /t holds x and new, x holds y and z: DeleteTree lists each of the 5 znodes and
	// deletes each. (The ExistsW watch on /t/new fires unread: WatchesFired counts delivery.)
	if _, err := c.Create(ctx, "/t/new", nil, zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	step("DeleteTree of 5 znodes", zkclient.Traffic{Reads: 5, Writes: 5}, func() {
		if err := c.DeleteTree(ctx, "/t"); err != nil {
			t.Fatal(err)
		}
	})
	done, stop := context.WithCancel(ctx)
	stop()
	step("calls refused on a done context", zkclient.Traffic{}, func() {
		_, _, _ = c.Get(done, "/t")
		_, _ = c.Create(done, "/t", nil, zkclient.Persistent)
	})
}

// A client with a small send buffer (the agents') refuses a request that does not fit with an
// error, and goes on working: the session is not lost.
func TestSendBufferBoundsRequests(t *testing.T) {
	e, _ := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(e.Connect()), SessionTimeout: 10 * time.Second,
		Logger: testr.New(t), SendBuffer: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "/big", make([]byte, 8<<10), zkclient.Persistent); err == nil {
		t.Fatal("an 8 KiB write through a 4 KiB send buffer succeeded")
	}
	if _, err := c.Create(ctx, "/small", []byte("ok"), zkclient.Persistent); err != nil {
		t.Fatalf("a small write after the refused one: %v", err)
	}
	if zkclient.AgentSendBuffer < 256<<10 {
		t.Fatalf("AgentSendBuffer %d leaves no room for a decision's transaction", zkclient.AgentSendBuffer)
	}
}

// A client with a small receive buffer fails a read whose answer does not fit with an error,
// without allocating past its bound, and reads what fits.
func TestRecvBufferBoundsResponses(t *testing.T) {
	e, big := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := big.Create(ctx, "/big", make([]byte, 16<<10), zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	if _, err := big.Create(ctx, "/small", []byte("ok"), zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(e.Connect()), SessionTimeout: 10 * time.Second,
		Logger: testr.New(t), RecvBuffer: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d, _, err := c.Get(ctx, "/small"); err != nil || string(d) != "ok" {
		t.Fatalf("a small read through a 4 KiB receive buffer: %q, %v", d, err)
	}
	if _, _, err := c.Get(ctx, "/big"); err == nil {
		t.Fatal("a 16 KiB answer through a 4 KiB receive buffer was read")
	}
}
