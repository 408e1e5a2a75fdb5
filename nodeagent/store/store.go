// Package store keeps a node's installed versions of each service on disk:
//
//	<dir>/<svc>/versions/<version>/   the unpacked, verified artifact
//	<dir>/<svc>/current  -> versions/<version>   what the service runs (switched atomically)
//	<dir>/<svc>/previous -> versions/<version>   what it ran before (kept for rollback)
//
// Service and version names come from ZooKeeper, which is not trusted, so every exported
// function checks the names it is given (zklayout.ValidService, zklayout.ValidVersion) before
// it builds a path: a name like "../../../x" fails with ErrInvalidName and touches nothing.
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

// ErrInvalidName wraps every refusal of a service or version name.
var ErrInvalidName = errors.New("invalid name")

// check refuses, for op, a service or version name that is not exactly what the CRD admits
// (and so not exactly one path element).
func check(op, svc string, versions ...string) error {
	if err := zklayout.ValidService(svc); err != nil {
		return fmt.Errorf("%s: %w: %w", op, ErrInvalidName, err)
	}
	for _, v := range versions {
		if err := zklayout.ValidVersion(v); err != nil {
			return fmt.Errorf("%s %s: %w: %w", op, svc, ErrInvalidName, err)
		}
	}
	return nil
}

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
	if dir == "" || f == nil {
		return nil, errors.New("store needs a directory and a fetcher")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return &Store{dir: dir, fetcher: f, installs: map[string]*installLock{}}, nil
}

// ServiceDir is where svc's files live.
func (s *Store) ServiceDir(svc string) (string, error) {
	if err := check("service dir", svc); err != nil {
		return "", err
	}
	return s.serviceDir(svc), nil
}

// CurrentLink is the stable path of the running version's directory.
func (s *Store) CurrentLink(svc string) (string, error) {
	if err := check("current link", svc); err != nil {
		return "", err
	}
	return filepath.Join(s.serviceDir(svc), "current"), nil
}

// VersionDir is where version v of svc is (or would be) installed.
func (s *Store) VersionDir(svc, v string) (string, error) {
	if err := check("version dir", svc, v); err != nil {
		return "", err
	}
	return s.versionDir(svc, v), nil
}

// serviceDir and versionDir take names that passed check.
func (s *Store) serviceDir(svc string) string { return filepath.Join(s.dir, svc) }

func (s *Store) versionDir(svc, v string) string {
	return filepath.Join(s.serviceDir(svc), "versions", v)
}

// Has reports whether version v of svc is installed; never for an invalid name (nothing on
// disk is looked at then).
func (s *Store) Has(svc, v string) bool {
	if check("has", svc, v) != nil {
		return false
	}
	return s.has(svc, v)
}

func (s *Store) has(svc, v string) bool {
	st, err := os.Stat(s.versionDir(svc, v))
	return err == nil && st.IsDir()
}

// Ensure installs rel unless it is already there. Only installs of the same service and version
// wait for each other, and only as long as ctx allows: a caller bounds the fetch with ctx.
func (s *Store) Ensure(ctx context.Context, rel *zklayout.Release) error {
	if rel == nil {
		return errors.New("install: no release")
	}
	svc, v := rel.Service, rel.Version
	if err := check("install", svc, v); err != nil {
		return err
	}
	unlock, err := s.lock(ctx, svc+"/"+v)
	if err != nil {
		return fmt.Errorf("install %s/%s: waiting for another install of it: %w", svc, v, err)
	}
	defer unlock()
	if s.has(svc, v) {
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

// Current is the version the current link points at ("" if none, or if svc is invalid).
func (s *Store) Current(svc string) string { return s.link(svc, "current") }

// Previous is the version the previous link points at ("" if none, or if svc is invalid).
func (s *Store) Previous(svc string) string { return s.link(svc, "previous") }

// link reads svc's link name. A target this store could not have written (not
// versions/<valid version>) reads as no version: callers build paths from what it returns.
func (s *Store) link(svc, name string) string {
	if check("read link", svc) != nil {
		return ""
	}
	t, err := os.Readlink(filepath.Join(s.serviceDir(svc), name))
	if err != nil {
		return ""
	}
	v := filepath.Base(t)
	if t != filepath.Join("versions", v) || zklayout.ValidVersion(v) != nil {
		return ""
	}
	return v
}

// Switch points current at v (which must be installed) and previous at the old current.
// Each link is replaced by rename, so a crash leaves either the old or the new link.
func (s *Store) Switch(svc, v string) error {
	if err := check("switch", svc, v); err != nil {
		return err
	}
	if !s.has(svc, v) {
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
	link := filepath.Join(s.serviceDir(svc), name)
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
	if err := check("prune", svc, keep...); err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(s.serviceDir(svc), "versions"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prune %s: %w", svc, err)
	}
	keepSet := map[string]bool{s.Current(svc): true, s.Previous(svc): true}
	for _, k := range keep {
		keepSet[k] = true
	}
	for _, e := range entries {
		// Dot entries are downloads in progress (see fetch.Install).
		if !keepSet[e.Name()] && !strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(s.serviceDir(svc), "versions", e.Name())); err != nil {
				return fmt.Errorf("prune %s/%s: %w", svc, e.Name(), err)
			}
			if f, ok := s.fetcher.(fetch.Forgetter); ok {
				f.Forget(svc, e.Name())
			}
		}
	}
	return nil
}
