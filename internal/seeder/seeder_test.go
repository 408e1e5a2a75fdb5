package seeder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

type env struct {
	tr     tracker.Tracker
	cl     *p2p.Client
	dir    string
	sd     *Seeder
	events chan string
}

// loopbackOrigins is the explicit opt-in the tests whose origins are httptest servers on
// 127.0.0.1 need: the default policy refuses loopback origins.
var loopbackOrigins = OriginPolicy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

// newEnv starts a real ZooKeeper, a torrent client and a started Seeder with short backoffs
// that may read loopback origins.
func newEnv(t *testing.T, ctx context.Context) *env {
	return newEnvWith(t, ctx, loopbackOrigins, testr.New(t))
}

// newEnvWith is newEnv with the seeder's origin policy and logger.
func newEnvWith(t *testing.T, ctx context.Context, origins OriginPolicy, log logr.Logger) *env {
	t.Helper()
	return newEnvOpts(t, ctx, origins, log, nil, nil)
}

// newEnvOpts is newEnvWith that lets mod change the seeder's Config (before its Dir exists),
// and hook see the Seeder before it starts.
func newEnvOpts(t *testing.T, ctx context.Context, origins OriginPolicy, log logr.Logger, mod func(*Config), hook func(*Seeder)) *env {
	t.Helper()
	zk, err := zkserver.Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(zk.Stop)
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(zk.Connect()), Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	dir := t.TempDir()
	// As in the operator: only the peers of a version's swarm may connect.
	cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(dir, "client"), ListenHost: "127.0.0.1", OnlyListedPeers: true,
		Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	e := &env{tr: tracker.Tracker{ZK: c, Layout: zklayout.MustNew("/rk")}, cl: cl, dir: filepath.Join(dir, "artifacts"),
		events: make(chan string, 100)}
	cfg := Config{Client: cl, Tracker: e.tr, Dir: e.dir, Name: "origin-test", Host: "127.0.0.1",
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: log, Origins: origins,
		OnChange: func(svc string) {
			select {
			case e.events <- svc:
			default:
			}
		}}
	if mod != nil {
		mod(&cfg)
	}
	e.sd = New(cfg)
	if hook != nil {
		hook(e.sd)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.sd.Start(sctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	// Wait for Start to take its context (Ensure answers ErrNotStarted before).
	started := func() bool {
		e.sd.mu.Lock()
		defer e.sd.mu.Unlock()
		return e.sd.ctx != nil
	}
	for !started() {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return e
}

// waitChange waits for an OnChange call.
func (e *env) waitChange(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-e.events:
	case <-ctx.Done():
		t.Fatalf("no OnChange: %v", ctx.Err())
	}
}

func payload() ([]byte, string) {
	body := []byte(strings.Repeat("rollkeeper artifact ", 5000))
	sum := sha256.Sum256(body)
	return body, hex.EncodeToString(sum[:])
}

// An origin that is down when the version is applied, then comes back: the seeder retries by
// itself and publishes the torrent, with no further call from outside.
func TestSeederHealsWhenTheOriginComesBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newEnv(t, ctx)

	// Reserve an address and close it: connections are refused until the origin starts there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	body, sum := payload()
	rel := &zklayout.Release{Service: "a", Version: "v2",
		Artifact: zklayout.Artifact{URL: "http://" + addr + "/a.bin", SHA256: sum, Unpack: zklayout.UnpackNone}}

	if st := e.sd.Ensure(rel); st.Ready || st.Err != nil {
		t.Fatalf("first Ensure: %+v, want an attempt under way", st)
	}
	e.waitChange(t, ctx)
	st := e.sd.Ensure(rel)
	if st.Ready || st.Err == nil || st.Permanent || st.NextAttempt.IsZero() {
		t.Fatalf("after a refused connection: %+v, want a transient error with a retry scheduled", st)
	}
	t.Logf("while the origin is down: attempt %d: %v", st.Attempts, st.Err)

	// The origin comes back, answering 503 once more before it serves.
	var asked atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) == 1 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(body)
	}))
	if srv.Listener, err = net.Listen("tcp", addr); err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv.Start()
	defer srv.Close()

	tor, _, err := e.tr.WaitPublished(ctx, "a", "v2")
	if err != nil {
		t.Fatalf("torrent never published: %v", err)
	}
	if tor.Size != int64(len(body)) {
		t.Fatalf("torrent size %d, want %d", tor.Size, len(body))
	}
	// Ready is set right after the publication and the first peer registration.
	for st = e.sd.Ensure(rel); !st.Ready; st = e.sd.Ensure(rel) {
		e.waitChange(t, ctx)
	}
	if st.Err != nil || asked.Load() < 2 {
		t.Fatalf("ready state %+v after %d origin request(s)", st, asked.Load())
	}
}

// A sha256 mismatch is permanent for the artifact: one read, no retry, and the error never
// carries the digest of what the origin served.
func TestSeederMismatchIsPermanent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	body, _ := payload()
	got := sha256.Sum256(body)
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	want := strings.Repeat("ab", 32)
	rel := &zklayout.Release{Service: "a", Version: "v3",
		Artifact: zklayout.Artifact{URL: srv.URL + "/a.bin", SHA256: want, Unpack: zklayout.UnpackNone}}
	e.sd.Ensure(rel)
	e.waitChange(t, ctx)
	st := e.sd.Ensure(rel)
	if !st.Permanent || !errors.Is(st.Err, artifact.ErrDigestMismatch) || !st.NextAttempt.IsZero() {
		t.Fatalf("state %+v, want a permanent sha256 mismatch", st)
	}
	msg := st.Err.Error()
	if strings.Contains(msg, hex.EncodeToString(got[:])) || !strings.Contains(msg, "sha256 mismatch") || !strings.Contains(msg, want) {
		t.Fatalf("error %q: want 'sha256 mismatch' and the spec's digest, never the computed one", msg)
	}
	if _, _, err := e.tr.Read(ctx, "a", "v3"); !errors.Is(err, tracker.ErrNotPublished) {
		t.Fatalf("torrent of a mismatching artifact: %v, want not published", err)
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("origin asked %d times, want once", n)
	}
	// Retry (the artifact changed elsewhere, or an operator asks) starts over.
	e.sd.Retry(rel)
	if st := e.sd.Ensure(rel); st.Err != nil || st.Attempts != 0 {
		t.Fatalf("after Retry: %+v, want a fresh attempt", st)
	}
}

func TestBackoffIsCappedWithJitter(t *testing.T) {
	for attempt := 1; attempt < 40; attempt++ {
		d := backoff(time.Second, 30*time.Second, attempt)
		ceil := min(30*time.Second, time.Second<<min(attempt-1, 10))
		if d < ceil/2 || d > ceil {
			t.Fatalf("attempt %d: backoff %s outside [%s, %s]", attempt, d, ceil/2, ceil)
		}
	}
}
