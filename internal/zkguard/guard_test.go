package zkguard_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/go-zookeeper/zk"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zkguard"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

const auth = "rollkeeper:guard-secret"

func startZK(t *testing.T, ctx context.Context) *zkserver.Ensemble {
	t.Helper()
	ens, err := zkserver.Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ens.Stop)
	return ens
}

func dial(t *testing.T, ctx context.Context, ens *zkserver.Ensemble, auth string) *zkclient.Client {
	t.Helper()
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(ens.Connect()), Auth: auth, Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// rawConn is a plain go-zookeeper connection, for what rollkeeper's client never does (open
// ACLs, setAcl), with digest credentials when auth is set.
func rawConn(t *testing.T, ens *zkserver.Ensemble, auth string) *zk.Conn {
	t.Helper()
	c, _, err := zk.Connect(zkclient.ParseServers(ens.Connect()), 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(discard{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if auth != "" {
		if err := c.AddAuth("digest", []byte(auth)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

type discard struct{}

func (discard) Printf(string, ...any) {}

// A fresh ZooKeeper: the guard creates the tree with rollkeeper's ACL and passes it; an
// anonymous client then cannot create a plan.
func TestFreshTreeIsLocked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ens := startZK(t, ctx)
	l := zklayout.MustNew("/rollkeeper")
	g, err := zkguard.New(dial(t, ctx, ens, auth), l, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(g.Err(), zkguard.ErrNotChecked) {
		t.Fatalf("verdict before a check: %v", g.Err())
	}
	if err := g.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if g.Err() != nil {
		t.Fatalf("verdict %v", g.Err())
	}
	anon := rawConn(t, ens, "")
	if _, err := anon.Create(l.Deploy()+"/a-", []byte("{}"), zk.FlagSequence, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
		t.Fatalf("anonymous create in a locked tree: %v, want ErrNoAuth", err)
	}
}

// A tree pre-created anonymously keeps its open ACL: the guard refuses it, names the znode and
// the fix, and passes once an admin locked it (setAcl -R).
func TestOpenTreeIsRefusedUntilLocked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ens := startZK(t, ctx)
	l := zklayout.MustNew("/rollkeeper")
	anon := rawConn(t, ens, "")
	for _, p := range append([]string{l.Root()}, l.Bases()...) {
		if _, err := anon.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	g, err := zkguard.New(dial(t, ctx, ens, auth), l, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	err = g.Check(ctx)
	var open *zkclient.OpenACLError
	if !errors.As(err, &open) || open.Path != l.Root() {
		t.Fatalf("check of an anonymously created tree: %v; want an OpenACLError on %s", err, l.Root())
	}
	msg := err.Error()
	for _, want := range []string{"/rollkeeper", "world:anyone:cdrwa", "setAcl -R /rollkeeper", "digest:" + zkclient.DigestID(auth)} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if !errors.Is(g.Err(), zkclient.ErrOpenACL) {
		t.Fatalf("verdict %v, want ErrOpenACL", g.Err())
	}

	// Only the root fixed: the first base is named next.
	locked := []zk.ACL{{Perms: zk.PermRead, Scheme: "world", ID: "anyone"}, {Perms: zk.PermAll, Scheme: "digest", ID: zkclient.DigestID(auth)}}
	if _, err := anon.SetACL(l.Root(), locked, -1); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(ctx); !errors.As(err, &open) || open.Path != l.Bases()[0] {
		t.Fatalf("check with only the root locked: %v; want an OpenACLError on %s", err, l.Bases()[0])
	}
	admin := rawConn(t, ens, auth)
	for _, p := range l.Bases() {
		if _, err := admin.SetACL(p, locked, -1); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Check(ctx); err != nil {
		t.Fatalf("check of the locked tree: %v", err)
	}
}

// An ACL opened while the guard runs is caught at the next reconnection: the verdict changes
// and Changed fires.
func TestRecheckOnReconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ens := startZK(t, ctx)
	l := zklayout.MustNew("/rollkeeper")
	g, err := zkguard.New(dial(t, ctx, ens, auth), l, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Check(ctx); err != nil {
		t.Fatal(err)
	}
	changed := g.Changed()
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); g.Run(rctx) }()
	defer func() { rcancel(); <-done }()

	admin := rawConn(t, ens, auth)
	if _, err := admin.SetACL(l.Staging(), zk.WorldACL(zk.PermAll), -1); err != nil {
		t.Fatal(err)
	}
	srv := ens.Servers[0]
	srv.Stop()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("the verdict did not change after the reconnection")
	}
	var open *zkclient.OpenACLError
	if err := g.Err(); !errors.As(err, &open) || open.Path != l.Staging() {
		t.Fatalf("verdict %v; want an OpenACLError on %s", err, l.Staging())
	}
}

func TestNeedsCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ens := startZK(t, ctx)
	if _, err := zkguard.New(dial(t, ctx, ens, ""), zklayout.MustNew("/rollkeeper"), logr.Discard()); err == nil {
		t.Fatal("a guard without credentials")
	}
}
