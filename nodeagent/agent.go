// Package nodeagent is the node agent's core: one Agent per node keeps that node's host services
// registered in ZooKeeper and rolls them to the planned version when the deploy queue, the
// staging queue and the quorum rule allow. It needs only ZooKeeper once started, and it is a
// library: the backend, store and ZooKeeper client are injected, so many agents can share a
// process (scale tests).
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zkguard"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/pagecache"
	"github.com/rollkeeper/rollkeeper/nodeagent/store"
)

// Config is everything an Agent needs; New checks it.
type Config struct {
	// Node is this node's name (the Kubernetes Node name).
	Node string
	// Address is where this node's services listen; health checks default to it.
	Address string
	// Labels are the node's labels, matched against each plan's selector.
	Labels map[string]string
	Layout zklayout.Layout
	ZK     *zkclient.Client
	// Backend runs the host services.
	Backend backend.Backend
	// Store holds installed versions.
	Store  *store.Store
	Logger logr.Logger
	// Pinner, if set, keeps the live version in the page cache while a new one downloads, and
	// the new version pinned from staging until it has been healthy for PinHold.
	Pinner  *pagecache.Pinner
	PinHold time.Duration
	// FetchTimeout bounds each artifact fetch (default 30m): a fetch that cannot finish is
	// abandoned, recorded as an Artifact failure and retried later.
	FetchTimeout time.Duration
	// RetryInterval is the first pause after an error (doubling up to MaxRetryInterval).
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// Metrics, if set, records this agent's services, upgrades and ZooKeeper session.
	Metrics *Metrics
	// RollCallWait bounds how long a node about to stop waits for the other nodes to answer
	// its roll call before it gives up and tries again later (default: the ZooKeeper session
	// timeout, past which an unanswered node's registration has expired if it is dead).
	RollCallWait time.Duration
	// Guard, if set, must find rollkeeper's ZooKeeper tree locked to rollkeeper's identity for
	// the agent to act on plans; Run re-checks it after every reconnection. Without it (no
	// credentials, --insecure-allow-open-zookeeper) anyone who can write the tree is obeyed.
	Guard *zkguard.Guard
	// Trust, if set, verifies every plan, release and deploy entry before the agent acts on it
	// (zksign): only what the operator's key signed is obeyed. Without it (--insecure-allow-
	// unsigned-plans) anyone who can write rollkeeper's tree is.
	Trust zksign.Verifier
}

// DefaultFetchTimeout is Config.FetchTimeout's default.
const DefaultFetchTimeout = 30 * time.Minute

// Agent is one node's agent.
type Agent struct {
	cfg Config
	log logr.Logger
}

// New validates cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	// A Node name (DNS-1123 subdomain): peers count no registration under any other name.
	if err := zklayout.ValidNode(cfg.Node); err != nil {
		return nil, fmt.Errorf("node name: %w", err)
	}
	if cfg.ZK == nil || cfg.Backend == nil || cfg.Store == nil {
		return nil, errors.New("agent needs a ZooKeeper client, a backend and a store")
	}
	if cfg.Layout.Root() == "" {
		cfg.Layout = zklayout.MustNew(zklayout.DefaultRoot)
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.MaxRetryInterval <= 0 {
		cfg.MaxRetryInterval = 30 * time.Second
	}
	if cfg.RollCallWait <= 0 {
		cfg.RollCallWait = cfg.ZK.SessionTimeout()
	}
	if cfg.RollCallWait <= 0 {
		cfg.RollCallWait = 10 * time.Second
	}
	cfg.Metrics.watchZooKeeper(cfg.ZK)
	return &Agent{cfg: cfg, log: cfg.Logger.WithValues("node", cfg.Node)}, nil
}

// Run keeps the node's services registered and rolled until ctx ends. When the ZooKeeper
// session expires (its ephemeral znodes are gone), it starts over in the next session; the host
// services keep running meanwhile.
func (a *Agent) Run(ctx context.Context) error {
	backoff := a.cfg.RetryInterval
	if g := a.cfg.Guard; g != nil {
		gctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); g.Run(gctx) }()
		defer func() { cancel(); <-done }()
	}
	for {
		sess := a.cfg.ZK.Session()
		select {
		case <-sess.Done:
			// Closed client, or an expiry the library has not yet replaced with a new session.
			if err := a.pause(ctx, backoff); err != nil {
				return nil
			}
			continue
		default:
		}
		sctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(ctx, cancel)
		go func() {
			select {
			case <-sess.Done:
				cancel()
			case <-sctx.Done():
			}
		}()
		err := a.runSession(ctx, sctx)
		cancel()
		stop()
		if ctx.Err() != nil {
			return nil
		}
		a.log.Info("zookeeper session ended; starting over", "reason", fmt.Sprint(err))
		if err := a.pause(ctx, backoff); err != nil {
			return nil
		}
	}
}

func (a *Agent) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runSession discovers services from the staging directory and runs one worker per service
// until the session ends. root outlives the session: host-service operations under way finish.
func (a *Agent) runSession(root, ctx context.Context) error {
	l := a.cfg.Layout
	for _, p := range l.Bases() {
		if err := a.cfg.ZK.EnsurePath(ctx, p); err != nil {
			return fmt.Errorf("ensure %s: %w", p, err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	workers := map[string]bool{}
	// ignored holds the invalid service names already reported (each is logged once a session).
	ignored := map[string]bool{}
	for {
		children, _, watch, err := a.cfg.ZK.ChildrenW(ctx, l.Staging())
		if err != nil {
			return fmt.Errorf("list services: %w", err)
		}
		for _, svc := range children {
			if workers[svc] {
				continue
			}
			// The name becomes znode and file paths (and a unit name): the CRD's rule, nothing looser.
			if err := zklayout.ValidService(svc); err != nil {
				if !ignored[svc] {
					a.log.Error(err, "ignoring staging entry with an invalid service name")
					ignored[svc] = true
				}
				continue
			}
			workers[svc] = true
			w := newWorker(a, svc)
			ans := newAnswerer(a, svc, w.registered.Load)
			w.ans = ans
			wg.Add(2)
			go func() {
				defer wg.Done()
				w.run(root, ctx)
			}()
			go func() {
				defer wg.Done()
				ans.run(ctx)
			}()
		}
		if err := watch.Wait(ctx); err != nil {
			return err
		}
	}
}
