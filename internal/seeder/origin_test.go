package seeder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// settle ensures rel and waits until its job stops (ready, or failed for good); it fails the
// test if the job keeps retrying.
func (e *env) settle(t *testing.T, ctx context.Context, rel *zklayout.Release) State {
	t.Helper()
	st := e.sd.Ensure(rel)
	for !st.Ready && !st.Permanent {
		if st.Err != nil && !st.NextAttempt.IsZero() {
			t.Fatalf("%s %s: transient failure, want ready or refused for good: %v", rel.Service, rel.Version, st.Err)
		}
		e.waitChange(t, ctx)
		st = e.sd.Ensure(rel)
	}
	return st
}

// assertRefused checks that st is a permanent refusal by the origin policy whose message says
// all of want, and that nothing of rel was published or kept.
func (e *env) assertRefused(t *testing.T, ctx context.Context, rel *zklayout.Release, st State, secret []byte, want ...string) {
	t.Helper()
	if st.Ready || !st.Permanent || !errors.Is(st.Err, ErrOriginRefused) {
		t.Fatalf("%s: state %+v, want refused for good", rel.Artifact.URL, st)
	}
	for _, w := range want {
		if !strings.Contains(st.Err.Error(), w) {
			t.Fatalf("error %q does not say %q", st.Err, w)
		}
	}
	if _, _, err := e.tr.Read(ctx, rel.Service, rel.Version); !errors.Is(err, tracker.ErrNotPublished) {
		t.Fatalf("torrent of a refused origin: %v, want not published", err)
	}
	if secret == nil {
		return
	}
	// Not a byte of it in the seeder's directory (what it would seed).
	_ = filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if data, rerr := os.ReadFile(p); rerr == nil && bytes.Contains(data, secret) {
			t.Fatalf("the seeder kept the secret in %s", p)
		}
		return nil
	})
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// file:// origins: none without --seeder-file-roots; with it, only files under the roots once
// `..` and symlinks are resolved. The fake service-account token is named with its right sha256
// (the worst case: whoever wrote the spec knows it), and is still never read nor seeded.
func TestFileOriginsOnlyUnderTheRoots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := t.TempDir()
	secrets := filepath.Join(base, "var", "run", "secrets", "kubernetes.io", "serviceaccount")
	allowed := filepath.Join(base, "artifacts")
	for _, d := range []string{secrets, allowed} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	token := []byte("eyJhbGciOiJSUzI1NiJ9.fake-service-account-token.signature")
	tokenPath := filepath.Join(secrets, "token")
	if err := os.WriteFile(tokenPath, token, 0o600); err != nil {
		t.Fatal(err)
	}
	body, sum := payload()
	if err := os.WriteFile(filepath.Join(allowed, "a.bin"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(tokenPath, filepath.Join(allowed, "innocent.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secrets, filepath.Join(allowed, "dir")); err != nil {
		t.Fatal(err)
	}
	tokenRel := func(v, u string) *zklayout.Release {
		return &zklayout.Release{Service: "f", Version: v,
			Artifact: zklayout.Artifact{URL: u, SHA256: digest(token), Unpack: zklayout.UnpackNone}}
	}

	t.Run("no roots", func(t *testing.T) {
		e := newEnvWith(t, ctx, OriginPolicy{}, testr.New(t))
		rel := tokenRel("v1", "file://"+tokenPath)
		e.assertRefused(t, ctx, rel, e.settle(t, ctx, rel), token, "file:// URLs are refused", "--"+FlagFileRoots)
		// Even a file that would be fine under a root.
		good := &zklayout.Release{Service: "f", Version: "v2",
			Artifact: zklayout.Artifact{URL: "file://" + filepath.Join(allowed, "a.bin"), SHA256: sum, Unpack: zklayout.UnpackNone}}
		e.assertRefused(t, ctx, good, e.settle(t, ctx, good), nil, "--"+FlagFileRoots)
	})

	t.Run("under roots", func(t *testing.T) {
		e := newEnvWith(t, ctx, OriginPolicy{FileRoots: []string{allowed}}, testr.New(t))
		for i, u := range []string{
			"file://" + tokenPath, // outside
			"file://" + allowed + "/../var/run/secrets/kubernetes.io/serviceaccount/token", // .. out of the root
			"file://" + filepath.Join(allowed, "innocent.bin"),                             // a symlink pointing out
			"file://" + filepath.Join(allowed, "dir", "token"),                             // through a symlinked directory
			"file://" + allowed + "2/token",                                                // a sibling sharing the prefix
		} {
			rel := tokenRel("v"+string(rune('1'+i)), u)
			e.assertRefused(t, ctx, rel, e.settle(t, ctx, rel), token, "not under the directories --"+FlagFileRoots)
		}
		// The file under the root is published and seeded.
		good := &zklayout.Release{Service: "f", Version: "ok",
			Artifact: zklayout.Artifact{URL: "file://" + filepath.Join(allowed, "a.bin"), SHA256: sum, Unpack: zklayout.UnpackNone}}
		if st := e.settle(t, ctx, good); !st.Ready {
			t.Fatalf("file under the root: %+v, want ready", st)
		}
		if _, _, err := e.tr.Read(ctx, "f", "ok"); err != nil {
			t.Fatalf("torrent of the file under the root: %v", err)
		}
	})

	t.Run("root is a symlink", func(t *testing.T) {
		// A root given through a symlink (/tmp -> /private/tmp, say) still contains its files.
		link := filepath.Join(base, "artifacts-link")
		if err := os.Symlink(allowed, link); err != nil {
			t.Fatal(err)
		}
		p := OriginPolicy{FileRoots: []string{link}}
		if err := p.CheckURL("file://" + filepath.Join(link, "a.bin")); err != nil {
			t.Fatalf("file under a symlinked root: %v", err)
		}
		if err := p.CheckURL("file://" + filepath.Join(link, "innocent.bin")); !errors.Is(err, ErrOriginRefused) {
			t.Fatalf("symlink escape under a symlinked root: %v, want refused", err)
		}
	})
}

// A loopback HTTP origin is refused by default, before any connection: by address and by a
// name resolving to it (the check is on the dialed address). The explicit opt-in allows it.
func TestLoopbackOriginNeedsTheOptIn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body, sum := payload()
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	rel := func(v, u string) *zklayout.Release {
		return &zklayout.Release{Service: "h", Version: v, Artifact: zklayout.Artifact{URL: u, SHA256: sum, Unpack: zklayout.UnpackNone}}
	}

	e := newEnvWith(t, ctx, OriginPolicy{}, testr.New(t))
	byAddr := rel("v1", srv.URL+"/a.bin")
	e.assertRefused(t, ctx, byAddr, e.settle(t, ctx, byAddr), nil, "127.0.0.1 is a loopback address", "--"+FlagAllowOriginCIDRs)
	// "localhost" is not an address: it is refused once resolved, when dialed.
	byName := rel("v2", "http://localhost:"+port+"/a.bin")
	e.assertRefused(t, ctx, byName, e.settle(t, ctx, byName), nil, "loopback address", "--"+FlagAllowOriginCIDRs)
	if n := asked.Load(); n != 0 {
		t.Fatalf("the refused origin was asked %d times", n)
	}

	opted := newEnvWith(t, ctx, OriginPolicy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, testr.New(t))
	if st := opted.settle(t, ctx, rel("v1", srv.URL+"/a.bin")); !st.Ready {
		t.Fatalf("with the opt-in: %+v, want ready", st)
	}
	if asked.Load() != 1 {
		t.Fatalf("origin asked %d times, want once", asked.Load())
	}
}

// A redirect from an allowed origin to a refused address is refused: every hop goes through the
// same dialer check. On a loopback-only test machine the "allowed origin" is 127.0.0.1, allowed
// by the policy held in the seeder's Config (the real seam the operator's flags set: here
// 127.0.0.1/32 alone), while the redirect target is another loopback address, 127.0.0.2, that
// the policy leaves refused; a redirect to the metadata address is refused even with
// 169.254.0.0/16 allowed, and before any connection to it.
func TestRedirectToARefusedAddressIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body, sum := payload()

	var targetAsked atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		// Linux routes all of 127/8 to lo; the e2e stacks rely on it too (one address per node).
		t.Fatalf("cannot listen on 127.0.0.2: %v", err)
	}
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetAsked.Add(1)
		_, _ = w.Write(body)
	}))
	target.Listener.Close()
	target.Listener = ln
	target.Start()
	defer target.Close()

	var hops atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-loopback":
			http.Redirect(w, r, target.URL+"/a.bin", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/iam/security-credentials/", http.StatusFound)
		case "/to-metadata-name":
			http.Redirect(w, r, "http://metadata.google.internal/computeMetadata/v1/", http.StatusFound)
		case "/loop":
			hops.Add(1)
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer origin.Close()

	policy := OriginPolicy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("169.254.0.0/16")}}
	e := newEnvWith(t, ctx, policy, testr.New(t))
	for i, c := range []struct{ path, says string }{
		{"/to-loopback", "127.0.0.2 is a loopback address"},
		{"/to-metadata", "169.254.169.254 is a cloud metadata address"},
		{"/to-metadata-name", "metadata.google.internal names a cloud metadata service"},
		{"/loop", "more than 5 redirects"},
	} {
		rel := &zklayout.Release{Service: "r", Version: "v" + string(rune('1'+i)),
			Artifact: zklayout.Artifact{URL: origin.URL + c.path, SHA256: sum, Unpack: zklayout.UnpackNone}}
		e.assertRefused(t, ctx, rel, e.settle(t, ctx, rel), nil, c.says)
	}
	if n := targetAsked.Load(); n != 0 {
		t.Fatalf("the redirect target was asked %d times", n)
	}
	if n := hops.Load(); n != MaxRedirects+1 {
		t.Fatalf("redirect loop: %d requests, want %d", n, MaxRedirects+1)
	}
}

func TestCheckAddr(t *testing.T) {
	none := OriginPolicy{}
	for _, c := range []struct {
		addr    string
		refused bool
	}{
		{"127.0.0.1", true}, {"127.1.2.3", true}, {"::1", true}, {"::ffff:127.0.0.1", true},
		{"0.0.0.0", true}, {"0.1.2.3", true}, {"::", true},
		{"169.254.169.254", true}, {"169.254.1.1", true}, {"fe80::1", true}, {"fd00:ec2::254", true},
		{"100.100.100.200", true}, {"168.63.129.16", true}, {"64:ff9b::a9fe:a9fe", true}, {"::ffff:169.254.169.254", true},
		{"224.0.0.1", true}, {"ff02::1", true},
		{"10.0.0.1", false}, {"192.168.1.10", false}, {"172.16.0.1", false}, {"8.8.8.8", false}, {"2001:db8::1", false}, {"fd00::1", false},
	} {
		err := none.CheckAddr(netip.MustParseAddr(c.addr))
		if (err != nil) != c.refused || (err != nil && !errors.Is(err, ErrOriginRefused)) {
			t.Errorf("CheckAddr(%s) = %v, want refused %v", c.addr, err, c.refused)
		}
	}
	wide := OriginPolicy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("::/0")}}
	if err := wide.CheckAddr(netip.MustParseAddr("169.254.1.1")); err != nil {
		t.Errorf("169.254.1.1 with 169.254.0.0/16 allowed: %v", err)
	}
	for _, a := range []string{"169.254.169.254", "fd00:ec2::254"} {
		if err := wide.CheckAddr(netip.MustParseAddr(a)); err == nil {
			t.Errorf("%s allowed by a wide prefix, want it named exactly", a)
		}
	}
	exact := OriginPolicy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")}}
	if err := exact.CheckAddr(netip.MustParseAddr("169.254.169.254")); err != nil {
		t.Errorf("169.254.169.254 named exactly: %v", err)
	}
}

// captureLogs is a logger that keeps every line (and passes it on to the test's log).
func captureLogs(t *testing.T) (logr.Logger, func() string) {
	var mu sync.Mutex
	var buf strings.Builder
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		buf.WriteString(prefix + " " + args + "\n")
		t.Log(prefix, args)
	}, funcr.Options{Verbosity: 10})
	return log, func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

// A file:// origin with a wrong sha256 says "sha256 mismatch" with the spec's digest, never the
// digest of what it read, in the error and in the logs: otherwise a spec naming any file under
// a root would learn its digest, and could copy it in to get the file seeded.
func TestMismatchNeverShowsTheComputedDigest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	body, _ := payload()
	if err := os.WriteFile(filepath.Join(root, "a.bin"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	got := digest(body)
	log, logs := captureLogs(t)
	e := newEnvWith(t, ctx, OriginPolicy{FileRoots: []string{root}}, log)
	want := strings.Repeat("cd", 32)
	rel := &zklayout.Release{Service: "m", Version: "v1",
		Artifact: zklayout.Artifact{URL: "file://" + filepath.Join(root, "a.bin"), SHA256: want, Unpack: zklayout.UnpackNone}}
	st := e.settle(t, ctx, rel)
	var mismatch *MismatchError
	if st.Ready || !st.Permanent || !errors.As(st.Err, &mismatch) {
		t.Fatalf("state %+v, want a permanent sha256 mismatch", st)
	}
	msg := st.Err.Error()
	if !strings.Contains(msg, "sha256 mismatch") || !strings.Contains(msg, want) || strings.Contains(strings.ToLower(msg), got) {
		t.Fatalf("error %q: want 'sha256 mismatch' and the spec's digest, never the computed one", msg)
	}
	if l := logs(); strings.Contains(strings.ToLower(l), got) {
		t.Fatalf("the logs show the computed digest:\n%s", l)
	} else if !strings.Contains(l, "sha256 mismatch") {
		t.Fatalf("the logs do not say sha256 mismatch:\n%s", l)
	}
	if _, _, err := e.tr.Read(ctx, "m", "v1"); !errors.Is(err, tracker.ErrNotPublished) {
		t.Fatalf("torrent of a mismatching artifact: %v, want not published", err)
	}
}
