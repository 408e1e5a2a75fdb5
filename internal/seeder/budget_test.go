package seeder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// versionBody is a distinct 100,000-byte artifact per version (one torrent each).
func versionBody(version string) ([]byte, string) {
	body := []byte(strings.Repeat(fmt.Sprintf("%-20s", version), 5000))
	sum := sha256.Sum256(body)
	return body, hex.EncodeToString(sum[:])
}

// versionOrigin serves versionBody of the version its path names (/<version>).
func versionOrigin(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := versionBody(strings.TrimPrefix(r.URL.Path, "/"))
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func versionRelease(srv *httptest.Server, version string) *zklayout.Release {
	_, sum := versionBody(version)
	return &zklayout.Release{Service: "a", Version: version,
		Artifact: zklayout.Artifact{URL: srv.URL + "/" + version, SHA256: sum, Unpack: zklayout.UnpackNone}}
}

// waitState waits for OnChange calls until rel's state satisfies done.
func (e *env) waitState(t *testing.T, ctx context.Context, rel *zklayout.Release, done func(State) bool) State {
	t.Helper()
	for {
		if st := e.sd.Ensure(rel); done(st) {
			return st
		}
		e.waitChange(t, ctx)
	}
}

func ready(st State) bool { return st.Ready }

func (e *env) copyExists(version string) bool {
	_, err := os.Stat(filepath.Join(e.dir, "a", version))
	return err == nil
}

// Within the budget (two and a half copies): a new copy deletes the copies of versions no longer
// seeded, oldest first, never one being seeded; when only seeded copies are left, the publish
// fails (naming the budget and its flag) and is retried until a rollout is done.
func TestSeederPrunesCopiesNotSeeded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newEnvOpts(t, ctx, loopbackOrigins, testr.New(t), func(c *Config) { c.MaxBytes = 250_000 }, nil)
	srv := versionOrigin(t)

	// v1 and v2 seeded once, then done: their copies stay (v1 older).
	for _, v := range []string{"v1", "v2"} {
		e.waitState(t, ctx, versionRelease(srv, v), ready)
		e.sd.Stop("a", v)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(e.dir, "a", "v1"), old, old); err != nil {
		t.Fatal(err)
	}
	// v2 seeded again: reused, not deleted. v3 takes v1's room.
	e.waitState(t, ctx, versionRelease(srv, "v2"), ready)
	e.waitState(t, ctx, versionRelease(srv, "v3"), ready)
	if e.copyExists("v1") || !e.copyExists("v2") || !e.copyExists("v3") {
		t.Fatalf("after v3: copies v1 %v, v2 %v, v3 %v; want v1 deleted, v2 (seeded) and v3 kept",
			e.copyExists("v1"), e.copyExists("v2"), e.copyExists("v3"))
	}

	// v4 while v2 and v3 are seeded: no room, a clear transient error.
	v4 := versionRelease(srv, "v4")
	st := e.waitState(t, ctx, v4, func(st State) bool { return st.Err != nil })
	if st.Permanent || !errors.Is(st.Err, ErrOverBudget) || !strings.Contains(st.Err.Error(), "--"+FlagMaxBytes) ||
		!strings.Contains(st.Err.Error(), "250000") {
		t.Fatalf("v4 with v2 and v3 seeded: %+v; want a transient ErrOverBudget naming the budget and --%s", st, FlagMaxBytes)
	}
	if !e.copyExists("v2") || !e.copyExists("v3") {
		t.Fatal("a copy being seeded was deleted")
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dir, "a", "v4")); len(entries) != 0 {
		t.Fatalf("v4's directory keeps %d files after the refused read", len(entries))
	}
	// v2's rollout is done: v4 is retried by the seeder itself and takes its room.
	e.sd.Stop("a", "v2")
	e.waitState(t, ctx, v4, ready)
	if e.copyExists("v2") || !e.copyExists("v3") || !e.copyExists("v4") {
		t.Fatalf("after v4: copies v2 %v, v3 %v, v4 %v; want v2 deleted", e.copyExists("v2"), e.copyExists("v3"), e.copyExists("v4"))
	}
}

// An origin larger than the whole budget is refused for good: one announcing its size is not
// read at all, an endless one is read no further than the budget. Nothing is left on disk.
func TestSeederRefusesAnOversizedOrigin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const budget = 1 << 20
	e := newEnvOpts(t, ctx, loopbackOrigins, testr.New(t), func(c *Config) { c.MaxBytes = budget }, nil)
	var served atomic.Int64
	chunk := make([]byte, 32<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/announced" {
			w.Header().Set("Content-Length", strconv.Itoa(64<<30))
		}
		for r.Context().Err() == nil {
			n, err := w.Write(chunk)
			served.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	for _, path := range []string{"announced", "endless"} {
		served.Store(0)
		rel := &zklayout.Release{Service: "a", Version: path,
			Artifact: zklayout.Artifact{URL: srv.URL + "/" + path, SHA256: strings.Repeat("ab", 32), Unpack: zklayout.UnpackNone}}
		st := e.waitState(t, ctx, rel, func(st State) bool { return st.Err != nil })
		msg := st.Err.Error()
		if !st.Permanent || !errors.Is(st.Err, ErrTooLarge) || !strings.Contains(msg, "--"+FlagMaxBytes) ||
			!strings.Contains(msg, strconv.Itoa(budget)) {
			t.Fatalf("%s origin: %+v; want a permanent ErrTooLarge naming the budget and --%s", path, st, FlagMaxBytes)
		}
		t.Logf("%s origin: %v (the origin wrote %d bytes)", path, st.Err, served.Load())
		// Socket buffers take some of what the origin writes; the seeder reads at most the budget.
		if n := served.Load(); n > 16*budget {
			t.Fatalf("%s origin: %d bytes served for a budget of %d: the read did not stop", path, n, budget)
		}
		if entries, _ := os.ReadDir(filepath.Join(e.dir, "a", path)); len(entries) != 0 {
			t.Fatalf("%s origin: %d files left", path, len(entries))
		}
	}
}

// Temporary files of an earlier run's origin reads are deleted at start; copies stay.
func TestSeederDeletesLeftoverTemporaryFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var dir string
	e := newEnvOpts(t, ctx, loopbackOrigins, testr.New(t), func(c *Config) {
		dir = filepath.Join(c.Dir, "a", "v1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{".origin-123", "a.bin"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}, nil)
	_ = e
	if _, err := os.Stat(filepath.Join(dir, ".origin-123")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover temporary file: %v, want deleted", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.bin")); err != nil {
		t.Fatalf("a copy was deleted at start: %v", err)
	}
}
