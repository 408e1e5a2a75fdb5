// Package seeder is the origin side of peer-to-peer distribution, run by the operator's leader:
// it reads each new version's artifact from its URL once, checks its sha256, builds the torrent
// (the URL doubles as web seed, so nodes can finish even with no seeder left), publishes it
// through ZooKeeper and seeds it until the service's rollout is done.
package seeder

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
)

// Config configures a Seeder.
type Config struct {
	Client  *p2p.Client
	Tracker tracker.Tracker
	// Dir keeps the artifacts read from the origins.
	Dir string
	// Name is the seeder's peer name (e.g. "origin-<pod>"); Host the address nodes reach it on.
	Name, Host string
	// OnChange is called (from a seeder goroutine) when a version becomes ready or fails.
	OnChange func(svc string)
	Logger   logr.Logger
}

// Seeder publishes and seeds versions. Start must run (it owns the jobs' lifetime).
type Seeder struct {
	cfg  Config
	http *fetch.HTTP

	mu   sync.Mutex
	ctx  context.Context
	jobs map[key]*job
	wg   sync.WaitGroup
}

type key struct{ svc, version, sha string }

type job struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	t      *p2p.Torrent
	// unregister removes the seeder's peer entry.
	unregister func(context.Context) error
}

// ErrNotStarted is returned by Ensure before Start.
var ErrNotStarted = errors.New("seeder not started")

// New returns a Seeder.
func New(cfg Config) *Seeder {
	return &Seeder{cfg: cfg, http: fetch.NewHTTP(), jobs: map[key]*job{}}
}

// NeedLeaderElection: only the leader reads origins and seeds.
func (s *Seeder) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable: jobs run until ctx ends.
func (s *Seeder) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	for k, j := range s.jobs {
		j.cancel()
		delete(s.jobs, k)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Ensure starts publishing rel's artifact unless that is done or under way. It reports whether
// the torrent is published and seeded, and the error of a failed attempt (an unreachable origin,
// a sha256 mismatch), which stays until the version's artifact changes or Retry.
func (s *Seeder) Ensure(rel *zklayout.Release) (ready bool, err error) {
	k := key{rel.Service, rel.Version, rel.Artifact.SHA256}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		return false, ErrNotStarted
	}
	if j := s.jobs[k]; j != nil {
		select {
		case <-j.done:
			return j.err == nil, j.err
		default:
			return false, nil
		}
	}
	ctx, cancel := context.WithCancel(s.ctx)
	j := &job{cancel: cancel, done: make(chan struct{})}
	s.jobs[k] = j
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		j.t, j.unregister, j.err = s.publish(ctx, rel)
		close(j.done)
		if j.err != nil {
			s.cfg.Logger.Error(j.err, "publishing artifact failed", "service", rel.Service, "version", rel.Version)
		} else {
			s.cfg.Logger.Info("artifact published and seeded", "service", rel.Service, "version", rel.Version)
		}
		if s.cfg.OnChange != nil {
			s.cfg.OnChange(rel.Service)
		}
	}()
	return false, nil
}

// Retry forgets a failed attempt so the next Ensure tries again.
func (s *Seeder) Retry(rel *zklayout.Release) {
	k := key{rel.Service, rel.Version, rel.Artifact.SHA256}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[k]; j != nil {
		select {
		case <-j.done:
			if j.err != nil {
				delete(s.jobs, k)
			}
		default:
		}
	}
}

// Stop stops seeding svc at version (its rollout is done; the nodes seed each other). The
// local copy stays, so seeding again does not read the origin.
func (s *Seeder) Stop(svc, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, j := range s.jobs {
		if k.svc == svc && k.version == version {
			select {
			case <-j.done:
			default:
				continue // still publishing: let it finish
			}
			j.cancel()
			if j.t != nil {
				j.t.Drop()
				_ = j.unregister(context.Background())
			}
			delete(s.jobs, k)
		}
	}
}

func (s *Seeder) publish(ctx context.Context, rel *zklayout.Release) (*p2p.Torrent, func(context.Context) error, error) {
	a := rel.Artifact
	dir := filepath.Join(s.cfg.Dir, rel.Service, rel.Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	file := filepath.Join(dir, fetch.FileName(a.URL))
	// A copy read earlier (operator restart, seeding resumed) is reused when it still matches.
	if sum, err := fetch.FileDigest(file); err != nil || sum != a.SHA256 {
		tmp, err := os.CreateTemp(dir, ".origin-*")
		if err != nil {
			return nil, nil, err
		}
		defer os.Remove(tmp.Name())
		err = s.http.Download(ctx, a, tmp)
		tmp.Close()
		if err != nil {
			return nil, nil, err
		}
		if err := os.Rename(tmp.Name(), file); err != nil {
			return nil, nil, err
		}
	}
	var webSeeds []string
	if u, err := url.Parse(a.URL); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		webSeeds = []string{a.URL}
	}
	mi, err := p2p.BuildMetaInfo(ctx, file, filepath.Base(file), webSeeds)
	if err != nil {
		return nil, nil, fmt.Errorf("build torrent of %s/%s: %w", rel.Service, rel.Version, err)
	}
	if err := s.cfg.Tracker.Publish(ctx, zklayout.Torrent{Service: rel.Service, Version: rel.Version,
		InfoHash: mi.InfoHash, Size: mi.Size, PieceLength: mi.PieceLength}, mi.Bytes); err != nil {
		return nil, nil, err
	}
	t, err := s.cfg.Client.Seed(ctx, mi, file)
	if err != nil {
		return nil, nil, fmt.Errorf("seed %s/%s: %w", rel.Service, rel.Version, err)
	}
	unregister, err := s.cfg.Tracker.Register(ctx, mi.InfoHash, zklayout.Peer{Node: s.cfg.Name, Host: s.cfg.Host,
		Port: s.cfg.Client.ListenPort(), Complete: true})
	if err != nil {
		t.Drop()
		return nil, nil, err
	}
	return t, unregister, nil
}
