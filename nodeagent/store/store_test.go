package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

type dirFetcher struct {
	calls     int
	forgotten []string
}

// Forget records what the store pruned (a peer-to-peer fetcher stops seeding it).
func (d *dirFetcher) Forget(svc, version string) { d.forgotten = append(d.forgotten, svc+"/"+version) }

func (d *dirFetcher) Fetch(_ context.Context, rel *zklayout.Release, dest string) error {
	d.calls++
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dest, "VERSION"), []byte(rel.Version), 0o644)
}

func TestSwitchKeepsPreviousAndPrunes(t *testing.T) {
	f := &dirFetcher{}
	s, err := New(t.TempDir(), f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, v := range []string{"v1", "v2", "v3"} {
		rel := &zklayout.Release{Service: "a", Version: v}
		if err := s.Ensure(ctx, rel); err != nil {
			t.Fatal(err)
		}
		if err := s.Ensure(ctx, rel); err != nil {
			t.Fatal(err)
		}
		if err := s.Switch("a", v); err != nil {
			t.Fatal(err)
		}
	}
	if f.calls != 3 {
		t.Errorf("fetched %d times, want 3 (installed versions are reused)", f.calls)
	}
	if s.Current("a") != "v3" || s.Previous("a") != "v2" {
		t.Fatalf("current %q previous %q", s.Current("a"), s.Previous("a"))
	}
	if b, _ := os.ReadFile(filepath.Join(s.CurrentLink("a"), "VERSION")); string(b) != "v3" {
		t.Fatalf("current link serves %q", b)
	}
	if err := s.Prune("a"); err != nil {
		t.Fatal(err)
	}
	if s.Has("a", "v1") || !s.Has("a", "v2") || !s.Has("a", "v3") {
		t.Fatal("prune must keep current and previous only")
	}
	if len(f.forgotten) != 1 || f.forgotten[0] != "a/v1" {
		t.Fatalf("fetcher told to forget %v, want [a/v1]", f.forgotten)
	}
	if err := s.Switch("a", "v9"); err == nil {
		t.Fatal("switch to a version that is not installed succeeded")
	}
}

// hangingFetcher blocks fetches of service "stuck" until their context ends (an artifact no
// peer can ever share); others install at once.
type hangingFetcher struct {
	dirFetcher
	started chan struct{}
}

func (h *hangingFetcher) Fetch(ctx context.Context, rel *zklayout.Release, dest string) error {
	if rel.Service == "stuck" {
		h.started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	return h.dirFetcher.Fetch(ctx, rel, dest)
}

// A fetch that never finishes holds back neither another service's install nor, beyond its
// own context, a second install of the same version.
func TestHangingFetchBlocksOnlyItself(t *testing.T) {
	f := &hangingFetcher{started: make(chan struct{}, 2)}
	s, err := New(t.TempDir(), f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck := &zklayout.Release{Service: "stuck", Version: "v1"}
	done := make(chan error, 1)
	go func() { done <- s.Ensure(ctx, stuck) }()
	<-f.started
	if err := s.Ensure(context.Background(), &zklayout.Release{Service: "other", Version: "v1"}); err != nil {
		t.Fatalf("install of another service while one hangs: %v", err)
	}
	// A second install of the stuck version waits for the first, and gives up with its context.
	short, scancel := context.WithCancel(context.Background())
	scancel()
	if err := s.Ensure(short, stuck); !errors.Is(err, context.Canceled) {
		t.Fatalf("second install of a hanging version = %v, want it to give up (canceled)", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("hanging install = %v, want canceled", err)
	}
	// The lock was released: a new attempt fetches again.
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { <-f.started; cancel2() }()
	if err := s.Ensure(ctx2, stuck); !errors.Is(err, context.Canceled) {
		t.Fatalf("retry of the hanging install = %v", err)
	}
	if len(s.installs) != 0 {
		t.Fatalf("install locks left behind: %d", len(s.installs))
	}
}
