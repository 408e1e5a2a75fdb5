// Package zkguard keeps rollkeeper from acting on a ZooKeeper tree that others may write.
//
// Whoever can write rollkeeper's plans and releases can make every selected agent run a
// command as root. So the operator and the agents check, at start and after every
// (re)connection, that only rollkeeper's own digest identity may create, write, delete or
// administer the root and each base znode; a tree created anonymously before rollkeeper had
// credentials keeps its open ACL and is refused. The bases are created first (with rollkeeper's
// ACL), so nobody can create one between the check and its first use.
package zkguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// ErrNotChecked is Err before the first check has completed.
var ErrNotChecked = errors.New("the ACLs of rollkeeper's ZooKeeper tree have not been checked yet")

// Guard holds the verdict of the last check.
type Guard struct {
	zk     *zkclient.Client
	layout zklayout.Layout
	log    logr.Logger

	mu      sync.Mutex
	err     error
	changed chan struct{}
}

// New returns a guard for layout's tree as seen by zk, which must have credentials.
func New(zk *zkclient.Client, layout zklayout.Layout, log logr.Logger) (*Guard, error) {
	if zk.Identity() == "" {
		return nil, errors.New("zkguard: the ZooKeeper client has no credentials; the tree cannot be locked")
	}
	return &Guard{zk: zk, layout: layout, log: log, err: ErrNotChecked, changed: make(chan struct{})}, nil
}

// Paths are the znodes checked: the root and every base.
func (g *Guard) Paths() []string {
	return append([]string{g.layout.Root()}, g.layout.Bases()...)
}

// Check creates the root and bases if missing, then checks their ACLs. A *zkclient.OpenACLError
// (errors.Is zkclient.ErrOpenACL) becomes the guard's verdict; any other error (ZooKeeper
// unreachable) leaves the verdict as it was and is returned.
func (g *Guard) Check(ctx context.Context) error {
	for _, p := range g.Paths() {
		if err := g.zk.EnsurePath(ctx, p); err != nil && !errors.Is(err, zkclient.ErrNoAuth) {
			return fmt.Errorf("check ACLs: ensure %s: %w", p, err)
		}
	}
	err := g.zk.CheckACLs(ctx, g.layout.Root(), g.Paths()...)
	if err != nil && !errors.Is(err, zkclient.ErrOpenACL) {
		return fmt.Errorf("check ACLs: %w", err)
	}
	g.set(err)
	return err
}

func (g *Guard) set(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := g.err
	g.err = err
	if (was == nil) != (err == nil) || (was != nil && err != nil && was.Error() != err.Error()) {
		if err != nil {
			g.log.Error(err, "not acting on rollkeeper's ZooKeeper tree until only rollkeeper may change it")
		} else if was != ErrNotChecked {
			g.log.Info("rollkeeper's ZooKeeper tree is locked again; acting on it", "paths", len(g.Paths()))
		}
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

// Err is nil when the last check found the tree locked; otherwise why not.
func (g *Guard) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Changed returns a channel closed when the verdict changes next.
func (g *Guard) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// Run checks again after every (re)connection until ctx ends. A check that cannot reach
// ZooKeeper is retried with backoff (it also runs again on the next connection).
func (g *Guard) Run(ctx context.Context) {
	for {
		next := g.zk.SessionEstablished()
		for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := g.Check(cctx)
			cancel()
			if err == nil || errors.Is(err, zkclient.ErrOpenACL) || ctx.Err() != nil {
				break
			}
			g.log.Info("could not check the ACLs of rollkeeper's ZooKeeper tree; retrying", "err", err.Error(), "after", backoff)
			select {
			case <-ctx.Done():
				return
			case <-next:
			case <-time.After(backoff):
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-next:
		}
	}
}
