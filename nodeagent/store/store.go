// Package store keeps a node's installed versions of each service on disk:
//
//	<dir>/<svc>/versions/<version>/   the unpacked, verified artifact
//	<dir>/<svc>/current  -> versions/<version>   what the service runs (switched atomically)
//	<dir>/<svc>/previous -> versions/<version>   what it ran before (kept for rollback)
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
)

// Store is one node's version directories.
type Store struct {
	dir     string
	fetcher fetch.Fetcher
	// mu guards installs. Installs are serialised per service and version only: a fetch that
	// hangs (an artifact nobody can share) must never hold back another service's.
	mu       sync.Mutex
	installs map[string]*installLock
}

// installLock is a lock that a waiter can give up on (its context ends).
type installLock struct {
	sem  chan struct{}
	refs int
}

// New returns a store rooted at dir.
func New(dir string, f fetch.Fetcher) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return &Store{dir: dir, fetcher: f, installs: map[string]*installLock{}}, nil
}

// ServiceDir is where svc's files live.
func (s *Store) ServiceDir(svc string) string { return filepath.Join(s.dir, svc) }

// CurrentLink is the stable path of the running version's directory.
func (s *Store) CurrentLink(svc string) string { return filepath.Join(s.ServiceDir(svc), "current") }

// VersionDir is where version v of svc is (or would be) installed.
func (s *Store) VersionDir(svc, v string) string { return s.versionDir(svc, v) }

func (s *Store) versionDir(svc, v string) string {
	return filepath.Join(s.ServiceDir(svc), "versions", v)
}

// Has reports whether version v of svc is installed.
func (s *Store) Has(svc, v string) bool {
	st, err := os.Stat(s.versionDir(svc, v))
	return err == nil && st.IsDir()
}

// Ensure installs rel unless it is already there. Only installs of the same service and version
// wait for each other, and only as long as ctx allows: a caller bounds the fetch with ctx.
func (s *Store) Ensure(ctx context.Context, rel *zklayout.Release) error {
	svc, v := rel.Service, rel.Version
	unlock, err := s.lock(ctx, svc+"/"+v)
	if err != nil {
		return fmt.Errorf("install %s/%s: waiting for another install of it: %w", svc, v, err)
	}
	defer unlock()
	if s.Has(svc, v) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.versionDir(svc, v)), 0o755); err != nil {
		return fmt.Errorf("install %s/%s: %w", svc, v, err)
	}
	if err := s.fetcher.Fetch(ctx, rel, s.versionDir(svc, v)); err != nil {
		return fmt.Errorf("install %s/%s: %w", svc, v, err)
	}
	return nil
}

// lock takes key's install lock, or gives up when ctx ends.
func (s *Store) lock(ctx context.Context, key string) (unlock func(), err error) {
	s.mu.Lock()
	l := s.installs[key]
	if l == nil {
		l = &installLock{sem: make(chan struct{}, 1)}
		s.installs[key] = l
	}
	l.refs++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.installs, key)
		}
		s.mu.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
		return func() { <-l.sem; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// Current is the version the current link points at ("" if none).
func (s *Store) Current(svc string) string { return s.link(svc, "current") }

// Previous is the version the previous link points at ("" if none).
func (s *Store) Previous(svc string) string { return s.link(svc, "previous") }

func (s *Store) link(svc, name string) string {
	t, err := os.Readlink(filepath.Join(s.ServiceDir(svc), name))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// Switch points current at v (which must be installed) and previous at the old current.
// Each link is replaced by rename, so a crash leaves either the old or the new link.
func (s *Store) Switch(svc, v string) error {
	if !s.Has(svc, v) {
		return fmt.Errorf("switch %s to %s: version not installed", svc, v)
	}
	old := s.Current(svc)
	if old == v {
		return nil
	}
	if old != "" {
		if err := s.setLink(svc, "previous", old); err != nil {
			return err
		}
	}
	return s.setLink(svc, "current", v)
}

func (s *Store) setLink(svc, name, v string) error {
	link := filepath.Join(s.ServiceDir(svc), name)
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join("versions", v), tmp); err != nil {
		return fmt.Errorf("link %s -> %s: %w", link, v, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("link %s -> %s: %w", link, v, err)
	}
	return nil
}

// Prune removes installed versions other than current, previous and keep.
func (s *Store) Prune(svc string, keep ...string) error {
	entries, err := os.ReadDir(filepath.Join(s.ServiceDir(svc), "versions"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	keepSet := map[string]bool{s.Current(svc): true, s.Previous(svc): true}
	for _, k := range keep {
		keepSet[k] = true
	}
	for _, e := range entries {
		// Dot entries are downloads in progress (see fetch.Install).
		if !keepSet[e.Name()] && !strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(s.ServiceDir(svc), "versions", e.Name())); err != nil {
				return err
			}
			if f, ok := s.fetcher.(fetch.Forgetter); ok {
				f.Forget(svc, e.Name())
			}
		}
	}
	return nil
}
