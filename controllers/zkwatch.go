package controllers

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// zkWatcher is a manager Runnable that keeps ZooKeeper child watches on current/<svc>,
// staging/<svc> and failures/<svc> of every service a RollingDeploy names, and on the deploy
// queue, and a data watch on each plan (a plan changed by hand is noticed even after the
// rollout is done), and turns each event into a reconcile of the RollingDeploys concerned. Watches are
// one-shot: each is re-armed right after it fires, and after a lost session.
type zkWatcher struct {
	zk     *zkclient.Client
	layout zklayout.Layout
	log    logr.Logger
	events chan event.GenericEvent

	mu sync.Mutex
	// ctx is the manager's context once Start runs; watches start only then.
	ctx context.Context
	// services lists the services each RollingDeploy names.
	services map[string]map[string]bool
	// running holds the cancel func of each watched path.
	running map[string]context.CancelFunc
}

func newZKWatcher(zk *zkclient.Client, layout zklayout.Layout, log logr.Logger) *zkWatcher {
	return &zkWatcher{
		zk: zk, layout: layout, log: log,
		events:   make(chan event.GenericEvent, 1024),
		services: map[string]map[string]bool{},
		running:  map[string]context.CancelFunc{},
	}
}

// NeedLeaderElection: only the leader reconciles, so only the leader watches.
func (w *zkWatcher) NeedLeaderElection() bool { return true }

// Start arms the watches and keeps them until ctx ends.
func (w *zkWatcher) Start(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	w.syncLocked()
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	for p, cancel := range w.running {
		cancel()
		delete(w.running, p)
	}
	w.ctx = nil
	w.mu.Unlock()
	return nil
}

// Track records the services of a RollingDeploy and watches them.
func (w *zkWatcher) Track(rd string, services []string) {
	if w == nil {
		return
	}
	set := make(map[string]bool, len(services))
	for _, s := range services {
		set[s] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.services[rd]; ok && sameSet(old, set) {
		return
	}
	w.services[rd] = set
	w.syncLocked()
}

// Forget stops watching for a RollingDeploy that is gone.
func (w *zkWatcher) Forget(rd string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.services[rd]; !ok {
		return
	}
	delete(w.services, rd)
	w.syncLocked()
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// syncLocked starts the watches now needed and stops the others. w.mu is held.
func (w *zkWatcher) syncLocked() {
	if w.ctx == nil {
		return
	}
	want := map[string]string{} // path -> service ("" for the deploy queue)
	for _, svcs := range w.services {
		for svc := range svcs {
			want[w.layout.CurrentService(svc)] = svc
			want[w.layout.StagingService(svc)] = svc
			want[w.layout.FailureService(svc)] = svc
			want[w.layout.ProgressService(svc)] = svc
			want[dataWatch+w.layout.StagingService(svc)] = svc
		}
	}
	if len(want) > 0 {
		want[w.layout.Deploy()] = ""
	}
	for p, cancel := range w.running {
		if _, ok := want[p]; !ok {
			cancel()
			delete(w.running, p)
		}
	}
	for p, svc := range want {
		if _, ok := w.running[p]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(w.ctx)
		w.running[p] = cancel
		go w.watch(ctx, p, svc)
	}
}

// dataWatch prefixes the keys of w.running that watch a znode's data rather than its children.
const dataWatch = "data:"

// watch keeps a child watch on p (or an existence watch while p is missing) and notifies the
// RollingDeploys of svc each time it fires.
func (w *zkWatcher) watch(ctx context.Context, p, svc string) {
	data := strings.HasPrefix(p, dataWatch)
	p = strings.TrimPrefix(p, dataWatch)
	log := w.log.WithValues("path", p, "data", data)
	backoff := newBackoff(200*time.Millisecond, 15*time.Second)
	for ctx.Err() == nil {
		var wt zkclient.Watch
		var err error
		if data {
			// An exists watch fires when the znode is created, deleted or written.
			_, _, wt, err = w.zk.ExistsW(ctx, p)
		} else {
			_, _, wt, err = w.zk.ChildrenW(ctx, p)
		}
		if !data && errors.Is(err, zkclient.ErrNoNode) {
			var exists bool
			exists, _, wt, err = w.zk.ExistsW(ctx, p)
			if err == nil && exists {
				continue // created in between: list it
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := backoff.next()
			log.V(1).Info("cannot watch znode; retrying", "error", err.Error(), "in", d)
			if !sleepCtx(ctx, d) {
				return
			}
			continue
		}
		backoff.reset()
		err = wt.Wait(ctx)
		if ctx.Err() != nil {
			return
		}
		// Fired, or the session changed under the watch: either way state may have moved.
		w.notify(ctx, svc)
		if err != nil {
			log.V(1).Info("watch interrupted; re-arming", "error", err.Error())
			if !sleepCtx(ctx, backoff.next()) {
				return
			}
		}
	}
}

// notify enqueues the RollingDeploys naming svc (every tracked one for the deploy queue).
func (w *zkWatcher) notify(ctx context.Context, svc string) {
	w.mu.Lock()
	var rds []string
	for rd, svcs := range w.services {
		if svc == "" || svcs[svc] {
			rds = append(rds, rd)
		}
	}
	w.mu.Unlock()
	sort.Strings(rds)
	for _, rd := range rds {
		ev := event.GenericEvent{Object: &v1alpha1.RollingDeploy{ObjectMeta: metav1.ObjectMeta{Name: rd}}}
		select {
		case w.events <- ev:
		case <-ctx.Done():
			return
		}
	}
}

// backoff is a capped, jittered exponential delay.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff { return &backoff{min: lo, max: hi, cur: lo} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.cur = b.min }

// sleepCtx waits d or until ctx ends; it reports whether the full wait elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Notify enqueues the RollingDeploys naming svc, from outside the watcher (the seeder). It does
// nothing before Start or after it returned.
func (w *zkWatcher) Notify(svc string) {
	w.mu.Lock()
	ctx := w.ctx
	w.mu.Unlock()
	if ctx != nil {
		w.notify(ctx, svc)
	}
}
