package store

import (
	"context"
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
