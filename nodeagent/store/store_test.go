package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	link, err := s.CurrentLink("a")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(link, "VERSION")); string(b) != "v3" {
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

// badNames are service or version names that must never reach a path: traversal, separators,
// dot elements, empty, NUL, over the CRD's length, and what only the looser rule of old took.
var badNames = []string{"../../../x", "..", ".", "", "a/b", "/abs", "a\\b", "v\x00", "x/../../y",
	strings.Repeat("v", zklayout.MaxVersionLength+1), "-v", ".hidden"}

// Every exported function refuses an invalid service or version name with ErrInvalidName and
// touches nothing: the current and previous links point where they did, nothing is fetched,
// nothing is created or removed anywhere under (or next to) the store's directory.
func TestInvalidNamesAreRefused(t *testing.T) {
	f := &dirFetcher{}
	parent := t.TempDir()
	s, err := New(filepath.Join(parent, "store"), f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, v := range []string{"v1", "v2"} {
		if err := s.Ensure(ctx, &zklayout.Release{Service: "a", Version: v}); err != nil {
			t.Fatal(err)
		}
		if err := s.Switch("a", v); err != nil {
			t.Fatal(err)
		}
	}
	// A directory the traversal would reach from a/versions/: were it followed, current would
	// point at it (Switch) or it would be removed (Prune).
	if err := os.MkdirAll(filepath.Join(parent, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	readLinks := func() (string, string) {
		t.Helper()
		cur, err := os.Readlink(filepath.Join(s.dir, "a", "current"))
		if err != nil {
			t.Fatal(err)
		}
		prev, err := os.Readlink(filepath.Join(s.dir, "a", "previous"))
		if err != nil {
			t.Fatal(err)
		}
		return cur, prev
	}
	tree := func() []string {
		t.Helper()
		var paths []string
		err := filepath.WalkDir(parent, func(p string, d os.DirEntry, err error) error {
			paths = append(paths, p)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return paths
	}
	cur, prev := readLinks()
	before, calls := tree(), f.calls
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("%s = %v, want ErrInvalidName", what, err)
		}
	}
	for _, bad := range badNames {
		refused(fmt.Sprintf("Switch(a, %q)", bad), s.Switch("a", bad))
		refused(fmt.Sprintf("Switch(%q, v1)", bad), s.Switch(bad, "v1"))
		refused(fmt.Sprintf("Ensure(a, %q)", bad), s.Ensure(ctx, &zklayout.Release{Service: "a", Version: bad}))
		refused(fmt.Sprintf("Ensure(%q, v1)", bad), s.Ensure(ctx, &zklayout.Release{Service: bad, Version: "v1"}))
		refused(fmt.Sprintf("Prune(%q)", bad), s.Prune(bad))
		refused(fmt.Sprintf("Prune(a, %q)", bad), s.Prune("a", bad))
		_, err := s.ServiceDir(bad)
		refused(fmt.Sprintf("ServiceDir(%q)", bad), err)
		_, err = s.CurrentLink(bad)
		refused(fmt.Sprintf("CurrentLink(%q)", bad), err)
		_, err = s.VersionDir("a", bad)
		refused(fmt.Sprintf("VersionDir(a, %q)", bad), err)
		_, err = s.VersionDir(bad, "v1")
		refused(fmt.Sprintf("VersionDir(%q, v1)", bad), err)
		if s.Has("a", bad) || s.Has(bad, "v1") {
			t.Errorf("Has says %q is installed", bad)
		}
		if s.Current(bad) != "" || s.Previous(bad) != "" {
			t.Errorf("Current or Previous of service %q is not empty", bad)
		}
	}
	if err := s.Ensure(ctx, nil); err == nil {
		t.Error("Ensure(nil) succeeded")
	}
	if c, p := readLinks(); c != cur || p != prev {
		t.Fatalf("links moved: current %q -> %q, previous %q -> %q", cur, c, prev, p)
	}
	if after := tree(); !slices.Equal(before, after) {
		t.Fatalf("the file tree changed:\nbefore %v\nafter  %v", before, after)
	}
	if f.calls != calls {
		t.Fatalf("fetched %d times for invalid names", f.calls-calls)
	}
	if s.Current("a") != "v2" || s.Previous("a") != "v1" {
		t.Fatalf("current %q previous %q, want v2 and v1", s.Current("a"), s.Previous("a"))
	}
}

// A link this store could not have written (pointing outside versions/, or at an invalid
// version) reads as no version, so what Current returns is always safe to build a path from.
func TestForeignLinkReadsAsNone(t *testing.T) {
	s, err := New(t.TempDir(), &dirFetcher{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"../../x", "/etc", "versions/../../x", "versions/..", "elsewhere/v1", "versions/-v"} {
		link := filepath.Join(s.dir, "a", "current")
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if v := s.Current("a"); v != "" {
			t.Errorf("current -> %q reads as version %q, want none", target, v)
		}
	}
}
