// Package seeder is the origin side of peer-to-peer distribution, run by the operator's leader:
// it reads each new version's artifact from its URL once, checks its sha256, builds the torrent
// (the URL doubles as web seed, so nodes can finish even with no seeder left), publishes it
// through ZooKeeper and seeds it until the service's rollout is done.
package seeder

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Config configures a Seeder.
type Config struct {
	Client  *p2p.Client
	Tracker tracker.Tracker
	// Dir keeps the artifacts read from the origins, as <svc>/<version>/<file>.
	Dir string
	// MaxBytes bounds what Dir holds (0: DefaultMaxBytes). A copy that would not fit deletes
	// the copies of versions not being seeded, oldest first; an origin that still does not fit
	// is not read further (ErrOverBudget, retried; ErrTooLarge, permanent).
	MaxBytes int64
	// Name is the seeder's peer name (e.g. "origin-<pod>"); Host the address nodes reach it on.
	Name, Host string
	// OnChange is called (from a seeder goroutine) when a version becomes ready, when an attempt
	// fails with an error other than the last one, and when it fails for good.
	OnChange func(svc string)
	// MinBackoff and MaxBackoff bound the wait between attempts after a transient failure
	// (defaults 1s and 30s); each wait doubles up to MaxBackoff, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// Origins says which URLs may be read; the zero value refuses file:// and the loopback,
	// link-local, unspecified and cloud metadata addresses (OriginPolicy).
	Origins OriginPolicy
	Logger  logr.Logger
}

// Seeder publishes and seeds versions. Start must run (it owns the jobs' lifetime).
type Seeder struct {
	cfg    Config
	client *http.Client

	mu   sync.Mutex
	ctx  context.Context
	jobs map[key]*job
	wg   sync.WaitGroup

	// dirMu guards reserved and serialises pruning Dir (taken before mu, never under it).
	dirMu sync.Mutex
	// reserved is the budget claimed by copies being written (their temporary files).
	reserved int64

	// swarmChanged, when set (tests), is called by followSwarm after each AllowPeers.
	swarmChanged func(infoHash string, allowed []p2p.Peer)
}

type key struct{ svc, version, sha string }

// job publishes one release, attempt after attempt, then seeds it. Its fields other than cancel
// and done are guarded by Seeder.mu.
type job struct {
	cancel context.CancelFunc
	// done is closed when the job gives up for good (a sha256 mismatch, a refused origin) or
	// is cancelled.
	done  chan struct{}
	state State
	t     *p2p.Torrent
	// unregister removes the seeder's peer entry.
	unregister func(context.Context) error
}

// State is how far the seeder got with a release.
type State struct {
	// Ready: the torrent is published and seeded; nodes may be told about the version.
	Ready bool
	// Err is the last attempt's error (nil while the first attempt runs, or once Ready).
	Err error
	// Permanent: Err will not heal by itself (a sha256 mismatch, an origin the OriginPolicy
	// refuses, an artifact larger than the whole MaxBytes); the job stopped retrying.
	Permanent bool
	// Attempts counts the attempts made so far; NextAttempt is when the next one starts (zero
	// when none is scheduled).
	Attempts    int
	NextAttempt time.Time
}

// ErrNotStarted is returned by Ensure before Start.
var ErrNotStarted = errors.New("seeder not started")

// MismatchError: the origin serves other bytes than the spec's sha256 names. It is permanent
// for that artifact. It never carries the digest computed from the bytes read: a user who
// copied it into the spec would bless whatever the origin served.
type MismatchError struct {
	URL, Want string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("sha256 mismatch: the bytes at %s do not match the spec's sha256 %s", e.URL, e.Want)
}

func (e *MismatchError) Unwrap() error { return artifact.ErrDigestMismatch }

// New returns a Seeder.
func New(cfg Config) *Seeder {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, 30*time.Second)
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	return &Seeder{cfg: cfg, client: cfg.Origins.client(), jobs: map[key]*job{}}
}

// NeedLeaderElection: only the leader reads origins and seeds.
func (s *Seeder) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable: jobs run until ctx ends.
func (s *Seeder) Start(ctx context.Context) error {
	// Before any job: no read is under way.
	s.cleanTemp()
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

// Ensure starts publishing rel's artifact unless that is done or under way, and reports how far
// it got. A transient failure (origin unreachable, an HTTP error, a timeout) is retried by the
// seeder itself with capped exponential backoff; a sha256 mismatch or an origin the
// OriginPolicy refuses stops the job until the artifact changes (another sha256 is another job)
// or Retry.
func (s *Seeder) Ensure(rel *zklayout.Release) State {
	k := key{rel.Service, rel.Version, rel.Artifact.SHA256}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		return State{Err: ErrNotStarted}
	}
	if j := s.jobs[k]; j != nil {
		return j.state
	}
	ctx, cancel := context.WithCancel(s.ctx)
	j := &job{cancel: cancel, done: make(chan struct{})}
	s.jobs[k] = j
	relCopy := *rel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(j.done)
		s.run(ctx, j, &relCopy)
	}()
	return j.state
}

// run attempts rel until it is published and seeded, it fails for good, or ctx ends.
func (s *Seeder) run(ctx context.Context, j *job, rel *zklayout.Release) {
	log := s.cfg.Logger.WithValues("service", rel.Service, "version", rel.Version, "url", rel.Artifact.URL)
	for attempt := 1; ; attempt++ {
		t, unregister, err := s.publish(ctx, rel)
		if ctx.Err() != nil {
			// Stopped (leadership lost, rollout done): nothing to report, nothing to keep.
			if err == nil {
				t.Drop()
				_ = unregister(context.WithoutCancel(ctx))
			}
			return
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			// Stop ran meanwhile and forgot the job.
			s.mu.Unlock()
			if err == nil {
				t.Drop()
				_ = unregister(context.WithoutCancel(ctx))
			}
			return
		}
		prev := j.state.Err
		j.state.Attempts = attempt
		if err == nil {
			j.state = State{Ready: true, Attempts: attempt}
			j.t, j.unregister = t, unregister
			// Admit the version's swarm, and only it, until the job is stopped.
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.followSwarm(ctx, t, log)
			}()
			s.mu.Unlock()
			log.Info("artifact published and seeded", "attempts", attempt)
			s.changed(rel.Service)
			return
		}
		var mismatch *MismatchError
		if errors.As(err, &mismatch) || errors.Is(err, ErrOriginRefused) || errors.Is(err, ErrTooLarge) {
			j.state.Err, j.state.Permanent, j.state.NextAttempt = err, true, time.Time{}
			s.mu.Unlock()
			advice := "fix the artifact and give it a new version"
			if errors.Is(err, ErrOriginRefused) {
				advice = "the operator does not read this origin: point the artifact at an allowed one and give it a new version"
			} else if errors.Is(err, ErrTooLarge) {
				advice = "raise --" + FlagMaxBytes + " (and the volume behind the seeder's directory), then retry"
			}
			log.Error(err, "publishing artifact failed for good: "+advice)
			s.changed(rel.Service)
			return
		}
		wait := backoff(s.cfg.MinBackoff, s.cfg.MaxBackoff, attempt)
		if errors.Is(err, ErrOverBudget) {
			// Heals only when rollouts finish (their copies become deletable): no quick retries,
			// each of which may read much of the origin again.
			wait = backoff(s.cfg.MaxBackoff, s.cfg.MaxBackoff, 1)
		}
		j.state.Err, j.state.NextAttempt = err, time.Now().Add(wait)
		s.mu.Unlock()
		log.Error(err, "publishing artifact failed; retrying", "attempt", attempt, "retryIn", wait.Round(time.Millisecond).String())
		if prev == nil || prev.Error() != err.Error() {
			s.changed(rel.Service)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

func (s *Seeder) changed(svc string) {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(svc)
	}
}

// backoff is the wait before attempt+1: min doubled per failed attempt, capped at max, with
// jitter (between half and all of it) so seeders of many versions do not retry in step.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// Retry forgets a release that failed for good, so the next Ensure tries again.
func (s *Seeder) Retry(rel *zklayout.Release) {
	k := key{rel.Service, rel.Version, rel.Artifact.SHA256}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[k]; j != nil && j.state.Permanent {
		delete(s.jobs, k)
	}
}

// Stop stops seeding svc at version (its rollout is done; the nodes seed each other) and ends
// any attempt still under way. The local copy stays, so seeding again does not read the
// origin, until the budget (MaxBytes) needs its room for a newer copy; a half-written torrent
// is replaced by the next Publish.
func (s *Seeder) Stop(svc, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, j := range s.jobs {
		if k.svc == svc && k.version == version {
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
	// Checked before a copy read earlier is reused too: an origin the policy refuses now is
	// not seeded from an old copy.
	if err := s.cfg.Origins.CheckURL(a.URL); err != nil {
		return nil, nil, fmt.Errorf("read origin %s: %w", a.URL, err)
	}
	dir := filepath.Join(s.cfg.Dir, rel.Service, rel.Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("seeder directory: %w", err)
	}
	file := filepath.Join(dir, artifact.FileName(a.URL))
	// A copy read earlier (operator restart, seeding resumed) is reused when it still matches.
	if sum, err := artifact.FileDigest(file); err != nil || sum != a.SHA256 {
		tmp, err := os.CreateTemp(dir, tempPrefix+"*")
		if err != nil {
			return nil, nil, fmt.Errorf("seeder directory: %w", err)
		}
		defer os.Remove(tmp.Name())
		out := &budgetWriter{s: s, w: tmp, svc: rel.Service, version: rel.Version, url: a.URL}
		// Released once the copy is renamed into place (and counted as such) or abandoned.
		defer out.release()
		err = s.download(ctx, a.URL, a.SHA256, out)
		if cerr := tmp.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write the copy of %s: %w", a.URL, cerr)
		}
		if err != nil {
			return nil, nil, err
		}
		if err := os.Rename(tmp.Name(), file); err != nil {
			return nil, nil, fmt.Errorf("keep the copy of %s: %w", a.URL, err)
		}
	}
	// The directory's mtime orders pruning (oldest first): a copy used now is the newest.
	now := time.Now()
	_ = os.Chtimes(dir, now, now)
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
		Port: s.cfg.Client.ListenPort(), Complete: true, Origin: true})
	if err != nil {
		t.Drop()
		return nil, nil, err
	}
	return t, unregister, nil
}
