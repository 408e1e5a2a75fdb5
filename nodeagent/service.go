package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
	"github.com/rollkeeper/rollkeeper/nodeagent/backend"
	"github.com/rollkeeper/rollkeeper/nodeagent/health"
	"github.com/rollkeeper/rollkeeper/nodeagent/pagecache"
)

// errWait means the step armed watches and has nothing to do until one fires.
var errWait = errors.New("waiting for a change")

// worker drives one service on one node. Each step reads ZooKeeper afresh and does at most one
// thing (level-triggered), so a crash or session loss at any point is repaired by the next step.
type worker struct {
	a   *Agent
	svc string
	log logr.Logger
	zk  *zkclient.Client
	l   zklayout.Layout

	// armed holds the one-shot watches still pending, keyed by kind and path, so a path is never
	// watched twice and every pending watch can wake the worker.
	armed map[string]zkclient.Watch
	// retryAt, if set, wakes the worker even without a watch event (fetch retries).
	retryAt time.Time
	// lastWait remembers why the worker last waited, to log transitions only.
	lastWait string
	// warm is the staged version pre-warmed and pinned in the page cache (zero: none).
	warm pagecache.Pinned
	// warmVersion is the version warm holds.
	warmVersion string
	// lockWarned is set once the node said it cannot lock memory.
	lockWarned bool
	// regs caches what each registration under current/<svc> says (see online).
	regs registrations
	// ans answers the service's roll calls; kicked after each registration.
	ans *answerer
	// registered is set while this session's registration of the service stands (created or
	// checked by this worker, not yet deleted by a decision). The answerer answers only then:
	// a previous session's registration outlives its agent, and a new agent whose process runs
	// but has not passed its health check must not lend that stale registration its answer.
	registered atomic.Bool
	// badStaging holds the staging children already reported (not <node>-<counter>, or
	// persistent), so each is logged once.
	badStaging map[string]bool
	// at is the znode the step is working on, and planVersion the plan's version it last read:
	// a panic is reported with them.
	at, planVersion string
	// panicked is set after a step panicked, until a step succeeds and clears the failure;
	// panicReason is what was recorded.
	panicked    bool
	panicReason string
	// checked is the version whose process this worker saw pass its health check (started it,
	// or adopted it). A running process of another version — left by a previous agent that
	// was killed or restarted, perhaps before its health check passed — is checked before it is
	// registered, so an unhealthy process never counts as an online node.
	checked string
	// refused lists what the current step refused for its signature (refusedVersion: what the
	// first was about), recorded after the step as one Signature failure; sigReason is the
	// reason last recorded (recorded again only when it changes), and sigRecord is set while a
	// Signature failure may stand in failures/<svc>/<node> (at start: a previous agent's may).
	// A step that decides (nil or errWait) without refusing anything clears it.
	refused        []string
	refusedVersion string
	sigReason      string
	sigRecord      bool
}

func newWorker(a *Agent, svc string) *worker {
	return &worker{a: a, svc: svc, log: a.log.WithValues("service", svc), zk: a.cfg.ZK, l: a.cfg.Layout,
		armed: map[string]zkclient.Watch{}, regs: registrations{entries: map[string]registration{}, reported: map[string]string{}},
		badStaging: map[string]bool{}, sigRecord: true}
}

// decodeSigned verifies data read from the znode at p with the agent's trusted keys (Config.Trust)
// and decodes it. A signature failure is noted for the step's Signature failure record (see
// settleSignatures; version is what the znode is about, as far as known) and returned: the
// caller acts on nothing from p. sigPath is what the signature binds: p itself, or a deploy
// entry's prefix.
func (w *worker) decodeSigned(p, sigPath, version string, data []byte, into zklayout.Payload) error {
	err := zksign.Decode(w.a.cfg.Trust, sigPath, data, into)
	if err == nil || !zksign.IsSignatureError(err) {
		return err
	}
	if p != sigPath {
		err = fmt.Errorf("znode %s: %w", p, err)
	}
	if len(w.refused) == 0 {
		w.refusedVersion = version
	}
	if !slices.Contains(w.refused, err.Error()) {
		w.refused = append(w.refused, err.Error())
	}
	return err
}

// settleSignatures records, after a step, what it refused for its signature as one Signature
// failure (once per distinct reason, so retries write nothing), or clears the record after a
// step that decided without refusing anything.
func (w *worker) settleSignatures(ctx context.Context, decided bool) {
	defer func() { w.refused, w.refusedVersion = nil, "" }()
	if len(w.refused) == 0 {
		if w.sigRecord && decided {
			w.sigRecord, w.sigReason = false, ""
			w.clearFailure(ctx, zklayout.FailureSignature)
		}
		return
	}
	reason := strings.Join(w.refused, "; ")
	if reason == w.sigReason {
		return
	}
	w.sigReason, w.sigRecord = reason, true
	w.log.Error(errors.New(reason), "refused unsigned or wrongly signed znodes; not acting on them")
	version := w.refusedVersion
	if zklayout.ValidVersion(version) != nil {
		version = "unknown"
	}
	w.recordFailure(ctx, version, zklayout.FailureSignature, errors.New(reason))
}

func (w *worker) run(root, ctx context.Context) {
	backoff := w.a.cfg.RetryInterval
	// Child watches need their parent to exist; a missing parent would silently watch nothing.
	for _, p := range []string{w.l.CurrentService(w.svc), w.l.FailureService(w.svc)} {
		for ctx.Err() == nil {
			err := w.zk.EnsurePath(ctx, p)
			if err == nil {
				break
			}
			w.log.Error(err, "ensure znode", "path", p)
			_ = w.a.pause(ctx, backoff)
		}
	}
	for ctx.Err() == nil {
		err := w.safeStep(root, ctx)
		decided := err == nil || errors.Is(err, errWait)
		if w.panicked && decided {
			w.panicked = false
			w.clearFailure(ctx, zklayout.FailureAgent)
		}
		w.settleSignatures(ctx, decided)
		switch {
		case err == nil:
			backoff = w.a.cfg.RetryInterval
		case errors.Is(err, errWait):
			backoff = w.a.cfg.RetryInterval
			w.waitAny(ctx)
		case ctx.Err() != nil:
			return
		default:
			w.log.Error(err, "rollout step failed; retrying", "after", backoff)
			_ = w.a.pause(ctx, backoff)
			backoff = min(2*backoff, w.a.cfg.MaxRetryInterval)
		}
	}
}

// errPlanChanged means the plan changed while the step worked for it: look again at once.
var errPlanChanged = errors.New("the plan changed meanwhile")

// errPanic marks a step that panicked (recovered, recorded, backed off).
var errPanic = errors.New("agent step panicked")

// safeStep runs one step and turns a panic into a failure of this service only: it is logged
// with its stack, counted, recorded in failures/<svc>/<node> (kind AgentError) naming the znode
// the step was working on, and the worker backs off like after any error. Other services'
// workers never notice.
func (w *worker) safeStep(root, ctx context.Context) (err error) {
	w.at = w.l.StagingService(w.svc)
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		err = fmt.Errorf("%w: service %s, znode %s: %v", errPanic, w.svc, w.at, r)
		w.log.Error(err, "recovered from a panic in the rollout step; recorded as a failure", "znode", w.at, "stack", string(debug.Stack()))
		w.a.cfg.Metrics.stepPanicked(w.svc)
		version := w.planVersion
		if version == "" {
			version = "unknown"
		}
		// Once per streak of the same panic: each record bumps failures/<svc>, failing peers'
		// concurrent decisions.
		if reason := err.Error(); !w.panicked || reason != w.panicReason {
			w.recordFailure(ctx, version, zklayout.FailureAgent, err)
			w.panicReason = reason
		}
		w.panicked = true
	}()
	return w.step(root, ctx)
}

// waiting logs why the worker waits (once per reason) and returns errWait.
func (w *worker) waiting(reason string, kv ...any) error {
	if key := reason + fmt.Sprint(kv...); key != w.lastWait {
		w.log.Info("waiting: "+reason, kv...)
		w.lastWait = key
	}
	return errWait
}

// waitAny blocks until an armed watch fires, retryAt passes, or ctx ends.
func (w *worker) waitAny(ctx context.Context) {
	keys := make([]string, 0, len(w.armed))
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
	for k, wt := range w.armed {
		keys = append(keys, k)
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(wt.C())})
	}
	if g := w.a.cfg.Guard; g != nil {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(g.Changed())})
	}
	if !w.retryAt.IsZero() {
		t := time.NewTimer(time.Until(w.retryAt))
		defer t.Stop()
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(t.C)})
	}
	i, _, _ := reflect.Select(cases)
	switch {
	case i == 0:
	case i <= len(keys):
		w.armed[keys[i-1]].Fired()
		delete(w.armed, keys[i-1])
	default:
		w.retryAt = time.Time{}
	}
}

// get reads p and keeps a data watch on it (an exists watch when p is missing).
func (w *worker) get(ctx context.Context, p string) ([]byte, zkclient.Stat, error) {
	if _, ok := w.armed["get:"+p]; ok {
		return w.zk.Get(ctx, p)
	}
	data, st, wt, err := w.zk.GetW(ctx, p)
	if errors.Is(err, zkclient.ErrNoNode) {
		if _, ok := w.armed["exists:"+p]; !ok {
			exists, _, ewt, eerr := w.zk.ExistsW(ctx, p)
			if eerr != nil {
				return nil, zkclient.Stat{}, eerr
			}
			w.armed["exists:"+p] = ewt
			if exists { // created in between: read again next step
				return nil, zkclient.Stat{}, fmt.Errorf("%s appeared while reading", p)
			}
		}
		return nil, zkclient.Stat{}, err
	}
	if err == nil {
		w.armed["get:"+p] = wt
	}
	return data, st, err
}

// getExisting reads p and keeps a data watch on it; a missing p arms nothing (it is not coming
// back: sequential staging children are never re-created).
func (w *worker) getExisting(ctx context.Context, p string) ([]byte, zkclient.Stat, error) {
	if _, ok := w.armed["get:"+p]; ok {
		return w.zk.Get(ctx, p)
	}
	data, st, wt, err := w.zk.GetW(ctx, p)
	if err == nil {
		w.armed["get:"+p] = wt
	}
	return data, st, err
}

// children lists p's children and keeps a child watch on it.
func (w *worker) children(ctx context.Context, p string) ([]string, error) {
	if _, ok := w.armed["children:"+p]; ok {
		c, _, err := w.zk.Children(ctx, p)
		return c, err
	}
	c, _, wt, err := w.zk.ChildrenW(ctx, p)
	if err == nil {
		w.armed["children:"+p] = wt
	}
	return c, err
}

// step does the next thing this node's service needs, or arms watches and returns errWait.
func (w *worker) step(root, ctx context.Context) error {
	// A tree others may change could hold anyone's plan and release: act on nothing in it (the
	// host service is left as it is) until the guard finds it locked again.
	if g := w.a.cfg.Guard; g != nil {
		if err := g.Err(); err != nil {
			return w.waiting("not acting on plans: rollkeeper's ZooKeeper tree is not locked to rollkeeper's identity; the service is left as it is", "err", err.Error())
		}
	}
	plan, err := w.readPlan(ctx)
	if err != nil {
		return err
	}
	if plan != nil {
		sel, err := labels.Parse(plan.Selector)
		if err != nil {
			return w.waiting("plan has an unparsable selector; not acting on it", "selector", plan.Selector, "err", err.Error())
		}
		if !sel.Matches(labels.Set(w.a.cfg.Labels)) {
			return w.waiting("this node is not selected for the service", "selector", plan.Selector)
		}
	}
	w.at = w.l.CurrentNode(w.svc, w.a.cfg.Node)
	st := w.a.cfg.Backend.Status(w.svc)
	if !st.Running {
		w.a.cfg.Metrics.down(w.svc)
		return w.start(root, ctx, plan)
	}
	if w.checked != st.Version {
		planVersion := ""
		if plan != nil {
			planVersion = plan.Version
		}
		if err := w.checkAdopted(root, ctx, st.Version, planVersion); err != nil {
			return err
		}
		if w.checked != st.Version { // rolled back to the previous version: look again
			return nil
		}
	}
	if err := w.register(ctx, st.Version); err != nil {
		return err
	}
	w.a.cfg.Metrics.online(w.svc, st.Version)
	if plan == nil {
		if err := w.leaveQueue(ctx, ""); err != nil {
			return err
		}
		return w.waiting("no plan for the service", "running", st.Version)
	}

	target, halted, err := w.target(ctx, plan)
	if err != nil {
		return err
	}
	if st.Version == target || halted {
		if err := w.leaveQueue(ctx, ""); err != nil {
			return err
		}
		if halted {
			return w.waiting("rollout halted by a failed health check", "version", plan.Version, "running", st.Version)
		}
		if target == plan.Version {
			if err := w.completeIfDone(ctx, plan); err != nil {
				return err
			}
		}
		return w.waiting("up to date", "version", st.Version)
	}

	w.at = w.l.Release(w.svc, target)
	rel, err := w.release(ctx, target)
	if err != nil {
		return err
	}
	if w.warmVersion != "" && w.warmVersion != target {
		w.unwarm()
	}
	if !w.a.cfg.Store.Has(w.svc, target) {
		err = w.fetchStaging(ctx, rel)
	}
	if errors.Is(err, errPlanChanged) {
		w.log.Info("plan changed during the fetch; looking again", "version", target)
		return nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.recordFailure(ctx, target, zklayout.FailureArtifact, err)
		w.retryAt = time.Now().Add(w.a.cfg.MaxRetryInterval)
		return w.waiting("artifact fetch failed; retrying later or on a new plan", "version", target, "err", err.Error())
	}
	w.clearArtifactFailure(ctx)

	w.prewarm(ctx, target)
	w.at = w.l.StagingService(w.svc)
	child, err := w.ensureStaged(ctx, target)
	if err != nil {
		return err
	}
	w.at = w.l.StagingChild(w.svc, child)
	if plan.Paused {
		return w.waiting("rollout paused", "staged", target)
	}
	turn, err := w.myTurn(ctx, child, target)
	if err != nil {
		return err
	}
	if !turn {
		// Every waiting case armed a watch and returned errWait; false without an error means
		// the queue changed under the read: look again at once.
		return nil
	}
	// Read failures after the queue: a failing node records its failure before leaving the
	// queue, so having seen it leave, this read sees the failure. A failure recorded by a node
	// upgrading at the same time, after this read, bumps the version of failures/<svc>, which
	// the decision checks: then nothing is stopped and the step starts over.
	_, fst, err := w.zk.Get(ctx, w.l.FailureService(w.svc))
	if err != nil {
		return err
	}
	if t, halted, err := w.target(ctx, plan); err != nil {
		return err
	} else if halted || t != target {
		return nil
	}
	if target == plan.Version {
		ok, have, need, err := w.distributed(ctx, plan)
		if err != nil {
			return err
		}
		if !ok {
			return w.waiting("distribution gate: not enough nodes have the version staged", "staged", have, "required", need)
		}
	}
	ok, online, err := w.quorumAllows(ctx, plan)
	if err != nil {
		return err
	}
	if !ok {
		return w.waiting("quorum does not allow another node down", "online", online, "minAvailable", plan.MinAvailable)
	}
	ok, answered, online, round, err := w.rollCall(ctx, plan)
	if err != nil {
		return err
	}
	if !ok {
		w.a.cfg.Metrics.rollCalled(w.svc, ResultTooFew)
		// Registered nodes that do not answer may be dead machines whose sessions have not
		// expired yet: they do not count. Try a new round when current/ changes or later.
		w.retryAt = time.Now().Add(w.a.cfg.RollCallWait)
		return w.waiting("roll call: too few online nodes answered for another node to go down",
			"round", round, "answered", answered, "othersOnline", online-1, "minAvailable", plan.MinAvailable)
	}
	w.a.cfg.Metrics.rollCalled(w.svc, ResultSuccess)
	w.log.V(1).Info("roll call answered", "round", round, "answered", answered, "minAvailable", plan.MinAvailable)
	if err := w.decide(ctx, child, target, fst.Version, round); err != nil {
		if errors.Is(err, zkclient.ErrBadVersion) || errors.Is(err, zkclient.ErrNoNode) {
			w.log.Info("lost the turn before stopping; re-evaluating", "err", err.Error())
			return nil
		}
		return err
	}
	return w.upgrade(root, ctx, rel, st.Version, child)
}

// fetchStaging downloads rel for an upgrade, keeping the live version's pages pinned while the
// download streams through the page cache.
func (w *worker) fetchStaging(ctx context.Context, rel *zklayout.Release) error {
	link, err := w.a.cfg.Store.CurrentLink(w.svc)
	if err != nil {
		return fmt.Errorf("fetch %s/%s: %w", w.svc, rel.Version, err)
	}
	live := w.pin(ctx, link)
	defer w.unpin(live)
	began := time.Now()
	err = w.fetch(ctx, rel)
	if ctx.Err() == nil {
		w.a.cfg.Metrics.fetched(w.svc, err, time.Since(began))
	}
	return err
}

// fetch installs rel within the agent's fetch timeout. A fetch that cannot finish (an artifact
// nobody can share, a hung origin) is abandoned then: its caller records an Artifact failure
// and retries later, and the store's per-version lock is released meanwhile.
// A change of the plan (a deleted deploy, another version) abandons it at once (errPlanChanged).
func (w *worker) fetch(ctx context.Context, rel *zklayout.Release) error {
	fctx, cancel := context.WithTimeout(ctx, w.a.cfg.FetchTimeout)
	defer cancel()
	key := "get:" + w.l.StagingService(w.svc)
	wt, watching := w.armed[key]
	stop, done, fired := make(chan struct{}), make(chan struct{}), make(chan struct{})
	if watching {
		// The plan's data watch (armed by readPlan) fires on any change of the plan.
		go func() {
			defer close(done)
			select {
			case <-wt.C():
				close(fired)
				cancel()
			case <-stop:
			}
		}()
	} else {
		close(done)
	}
	err := w.a.cfg.Store.Ensure(fctx, rel)
	close(stop)
	<-done
	select {
	case <-fired:
		wt.Fired()
		delete(w.armed, key)
		return fmt.Errorf("fetch of %s/%s: %w", w.svc, rel.Version, errPlanChanged)
	default:
	}
	if err != nil && ctx.Err() == nil && errors.Is(fctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("fetch of %s/%s abandoned after the fetch timeout (%s): %w", w.svc, rel.Version, w.a.cfg.FetchTimeout, err)
	}
	return err
}

// readPlan returns the service's plan, nil if there is none. A malformed plan is reported and
// waited out, never acted on.
func (w *worker) readPlan(ctx context.Context) (*zklayout.Plan, error) {
	data, _, err := w.get(ctx, w.l.StagingService(w.svc))
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p zklayout.Plan
	pp := w.l.StagingService(w.svc)
	if err := w.decodeSigned(pp, pp, w.a.cfg.Store.Current(w.svc), data, &p); err != nil {
		// Treated as no plan: the node keeps (or brings) its service up as it is, and the data
		// watch armed above wakes it when the plan is rewritten.
		if !zksign.IsSignatureError(err) {
			w.log.Error(err, "plan is malformed; not acting on it")
		}
		return nil, nil
	}
	w.planVersion = p.Version
	return &p, nil
}

// target is the version this node should run: the plan's, or with the Rollback policy after a
// health failure, the previous one. halted means the rollout stopped on a failure (Pause).
func (w *worker) target(ctx context.Context, plan *zklayout.Plan) (string, bool, error) {
	var names []string
	var err error
	if plan.FailurePolicy == zklayout.FailurePolicyRollback {
		// Nodes already upgraded must hear of a failure to roll back; failures are rare, so
		// this watch wakes nobody during a healthy rollout.
		names, err = w.children(ctx, w.l.FailureService(w.svc))
	} else {
		names, _, err = w.zk.Children(ctx, w.l.FailureService(w.svc))
	}
	if errors.Is(err, zkclient.ErrNoNode) {
		return plan.Version, false, nil
	}
	if err != nil {
		return "", false, err
	}
	for _, n := range names {
		data, _, err := w.zk.Get(ctx, w.l.Failure(w.svc, n))
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil {
			return "", false, err
		}
		var f zklayout.Failure
		if err := zklayout.Decode(data, &f); err != nil {
			w.log.Error(err, "ignoring malformed failure record", "znode", n)
			continue
		}
		if f.Node != n {
			// Agents record failures under their own name; a record naming another node
			// was not written by it (it still decoded: its version is a valid name).
			w.log.Error(zklayout.ErrMalformed, "ignoring failure record that names another node", "znode", n, "node", f.Node)
			continue
		}
		if f.Kind == zklayout.FailureHealthCheck && f.Version == plan.Version {
			if plan.FailurePolicy == zklayout.FailurePolicyRollback && plan.PreviousVersion != "" {
				return plan.PreviousVersion, false, nil
			}
			return plan.Version, true, nil
		}
	}
	return plan.Version, false, nil
}

func (w *worker) release(ctx context.Context, version string) (*zklayout.Release, error) {
	// version comes from a plan, a registration, a failure record or the local store: it
	// names a znode (and later a directory) only if it is a version.
	if err := zklayout.ValidVersion(version); err != nil {
		return nil, fmt.Errorf("release %s: %w", w.svc, err)
	}
	rp := w.l.Release(w.svc, version)
	data, _, err := w.zk.Get(ctx, rp)
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", w.svc, version, err)
	}
	var r zklayout.Release
	if err := w.decodeSigned(rp, rp, version, data, &r); err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", w.svc, version, err)
	}
	// The store installs under the payload's names and the switch follows the znode's: they
	// must be the same, or an install would land where nothing looks for it.
	if r.Service != w.svc || r.Version != version {
		return nil, fmt.Errorf("release %s/%s: %w: the payload is for %s/%s", w.svc, version, zklayout.ErrMalformed, r.Service, r.Version)
	}
	return &r, nil
}

// start brings a stopped service up on the most popular version among online peers (ties: the
// plan's target). Starting never lowers availability, so it needs no turn.
func (w *worker) start(root, ctx context.Context, plan *zklayout.Plan) error {
	preferred := ""
	if plan != nil {
		t, _, err := w.target(ctx, plan)
		if err != nil {
			return err
		}
		preferred = t
	}
	peers, err := w.online(ctx, plan, false)
	if err != nil {
		return err
	}
	delete(peers, w.a.cfg.Node)
	var versions []string
	for _, v := range peers {
		versions = append(versions, v)
	}
	v, ok := rollout.MostPopular(versions, preferred)
	if !ok {
		if v = w.a.cfg.Store.Current(w.svc); v == "" {
			return w.waiting("nothing to start: no plan, no online peer, no installed version")
		}
	}
	w.at = w.l.Release(w.svc, v)
	rel, err := w.release(ctx, v)
	if err != nil {
		return err
	}
	if err := w.fetch(ctx, rel); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errPlanChanged) {
			return nil
		}
		w.recordFailure(ctx, v, zklayout.FailureArtifact, err)
		w.retryAt = time.Now().Add(w.a.cfg.MaxRetryInterval)
		return w.waiting("cannot fetch the version to start; retrying later", "version", v, "err", err.Error())
	}
	if err := w.a.cfg.Store.Switch(w.svc, v); err != nil {
		return err
	}
	w.log.Info("starting service", "version", v, "peers", len(versions))
	if err := w.runAndCheck(root, rel); err != nil {
		_ = w.a.cfg.Backend.Stop(root, w.svc)
		w.retryAt = time.Now().Add(w.a.cfg.MaxRetryInterval)
		return w.waiting("service did not come up healthy; retrying later", "version", v, "err", err.Error())
	}
	return w.register(ctx, v)
}

// runAndCheck starts rel from the current link and waits for its health check.
func (w *worker) runAndCheck(ctx context.Context, rel *zklayout.Release) error {
	cfg := w.a.cfg
	dir, vars, env := w.runEnv(rel)
	spec := backend.Spec{
		Version:   rel.Version,
		Dir:       dir,
		Command:   expandAll(rel.Run.Command, vars),
		Args:      expandAll(rel.Run.Args, vars),
		Env:       env,
		StopGrace: time.Duration(rel.Run.StopGracePeriodSeconds) * time.Second,
		// zklayout checked both: within 0..MaxRunAsID, set together.
		RunAsUser:  uint32Of(rel.Run.RunAsUser),
		RunAsGroup: uint32Of(rel.Run.RunAsGroup),
	}
	w.checked = ""
	if err := cfg.Backend.Start(ctx, w.svc, spec); err != nil {
		return err
	}
	restarts := cfg.Backend.Status(w.svc).Restarts
	alive := func() error {
		s := cfg.Backend.Status(w.svc)
		if !s.Running || s.Restarts > restarts {
			return fmt.Errorf("process exited: %s", s.LastExit)
		}
		return nil
	}
	err := health.Wait(ctx, rel.HealthCheck, cfg.Address, env, alive)
	if err != nil && ctx.Err() == nil {
		cfg.Metrics.healthCheckFailed(w.svc)
	}
	if err == nil {
		w.checked = rel.Version
	}
	return err
}

// checkAdopted health-checks a running process this worker did not start (see checked).
// Unhealthy, it is not registered and the failure is recorded.
//
// An unhealthy process left mid-upgrade (it runs the plan's version, which the store switched
// to from a previous version it still holds) is rolled back like a failed upgrade: it serves
// nothing healthy and counts for nobody, while the previous version did. Any other unhealthy
// process (no previous version, or not the plan's: a rollback that is unhealthy too) is left
// running and checked again later: stopping it could only make things worse, and a fleet-wide
// external fault must not make every agent stop its service.
func (w *worker) checkAdopted(root, ctx context.Context, version, planVersion string) error {
	cfg := w.a.cfg
	w.at = w.l.Release(w.svc, version)
	rel, err := w.release(ctx, version)
	if err != nil {
		return err
	}
	_, _, env := w.runEnv(rel)
	alive := func() error {
		if s := cfg.Backend.Status(w.svc); !s.Running {
			return fmt.Errorf("process exited: %s", s.LastExit)
		}
		return nil
	}
	err = health.Wait(ctx, rel.HealthCheck, cfg.Address, env, alive)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		cfg.Metrics.healthCheckFailed(w.svc)
		// Only the plan's version is a rollout failure (it halts the rollout). Another one —
		// the version a rollback returned to, unhealthy too — must not overwrite that record.
		if version == planVersion {
			w.recordFailure(ctx, version, zklayout.FailureHealthCheck, fmt.Errorf("running process left by a previous agent is unhealthy: %w", err))
		}
		if prev := cfg.Store.Previous(w.svc); version == planVersion && prev != "" && prev != version && cfg.Store.Current(w.svc) == version {
			return w.rollBackAdopted(root, ctx, version, prev, err)
		}
		w.retryAt = time.Now().Add(cfg.MaxRetryInterval)
		return w.waiting("running process left by a previous agent is unhealthy; not registering it", "version", version, "err", err.Error())
	}
	w.log.Info("running process passed its health check", "version", version)
	w.checked = version
	return nil
}

// rollBackAdopted stops an unhealthy process left mid-upgrade at version and starts prev, the
// version it replaced, as a failed upgrade does. The next step registers prev once healthy.
func (w *worker) rollBackAdopted(root, ctx context.Context, version, prev string, cause error) error {
	cfg := w.a.cfg
	w.log.Error(cause, "running process left mid-upgrade by a previous agent is unhealthy; rolling back", "from", version, "to", prev)
	w.at = w.l.Release(w.svc, prev)
	rel, err := w.release(ctx, prev)
	if err != nil {
		return fmt.Errorf("roll back %s %s->%s: %w", w.svc, version, prev, err)
	}
	cfg.Metrics.upgraded(w.svc, ResultRollback, 0)
	if err := cfg.Backend.Stop(root, w.svc); err != nil {
		return fmt.Errorf("roll back %s %s->%s: stop: %w", w.svc, version, prev, err)
	}
	cfg.Metrics.down(w.svc)
	if err := cfg.Store.Switch(w.svc, prev); err != nil {
		return fmt.Errorf("roll back %s %s->%s: %w", w.svc, version, prev, err)
	}
	if err := w.runAndCheck(root, rel); err != nil {
		w.log.Error(err, "previous version is unhealthy too after rollback", "version", prev)
	}
	return nil
}

// uint32Of converts a validated user or group id.
func uint32Of(id *int64) *uint32 {
	if id == nil {
		return nil
	}
	v := uint32(*id)
	return &v
}

// runEnv is the artifact dir, the $(VARS) and the environment a release runs and is checked
// with: the run's variables only. The backend and the health checks add PATH (hostenv); the
// agent's own environment holds its secrets and is never passed on.
func (w *worker) runEnv(rel *zklayout.Release) (dir string, vars map[string]string, env []string) {
	cfg := w.a.cfg
	// Cannot fail: w.svc passed zklayout.ValidService before its worker was made (runSession).
	dir, _ = cfg.Store.CurrentLink(w.svc)
	vars = map[string]string{
		"ROLLKEEPER_ARTIFACT_DIR": dir,
		"ROLLKEEPER_VERSION":      rel.Version,
		"ROLLKEEPER_SERVICE":      w.svc,
		"ROLLKEEPER_NODE":         cfg.Node,
		"ROLLKEEPER_NODE_ADDRESS": cfg.Address,
	}
	env = make([]string, 0, len(vars)+len(rel.Run.Env))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	for _, e := range rel.Run.Env {
		env = append(env, e.Name+"="+expand(e.Value, vars))
	}
	return dir, vars, env
}

// register makes sure current/<svc>/<node> exists in this session with version and the node's
// labels. A registration under this node's name that is not that — left by a previous session
// of this node (crash, expiry), or malformed (written by hand) — is replaced: the agent repairs
// its own part of the tree. Registrations are only ever created and deleted, never set (see
// online, whose cache relies on it).
func (w *worker) register(ctx context.Context, version string) error {
	p := w.l.CurrentNode(w.svc, w.a.cfg.Node)
	data, err := w.registration(version)
	if err != nil {
		return err
	}
	if err := w.zk.EnsurePath(ctx, w.l.CurrentService(w.svc)); err != nil {
		return err
	}
	old, st, err := w.zk.Get(ctx, p)
	switch {
	case errors.Is(err, zkclient.ErrNoNode):
		_, err = w.zk.Create(ctx, p, data, zkclient.Ephemeral)
		if err == nil {
			w.log.Info("registered online", "version", version)
			w.setRegistered()
		}
		return err
	case err != nil:
		return err
	}
	var cur zklayout.Current
	why := ""
	switch derr := zklayout.Decode(old, &cur); {
	case derr != nil:
		why = "malformed: " + derr.Error()
	case cur.Node != w.a.cfg.Node:
		why = fmt.Sprintf("names node %q", cur.Node)
	case st.EphemeralOwner != w.zk.Session().ID:
		why = fmt.Sprintf("left by another session (0x%x)", st.EphemeralOwner)
	case cur.Version != version:
		why = fmt.Sprintf("says version %q", cur.Version)
	case !maps.Equal(cur.Labels, w.a.cfg.Labels):
		why = "carries other labels"
	default:
		if !w.registered.Load() {
			w.setRegistered()
		}
		return nil
	}
	w.log.Info("replacing this node's registration", "znode", p, "why", why)
	if err := w.zk.Multi(ctx, zkclient.DeleteOp(p, st.Version), zkclient.CreateOp(p, data, zkclient.Ephemeral)); err != nil {
		return err
	}
	w.setRegistered()
	return nil
}

// setRegistered records that this session's registration stands and lets the roll call
// answerer (if any) answer a round it passed over.
func (w *worker) setRegistered() {
	w.registered.Store(true)
	if w.ans != nil {
		w.ans.kick()
	}
}

// registration is this node's current/<svc>/<node> payload for version.
func (w *worker) registration(version string) ([]byte, error) {
	return zklayout.Encode(&zklayout.Current{Node: w.a.cfg.Node, Version: version, Address: w.a.cfg.Address,
		Health: zklayout.HealthHealthy, Since: time.Now().UTC(), Labels: w.a.cfg.Labels})
}

// queue returns the service's staging queue in order and this node's own children.
func (w *worker) queue(ctx context.Context) (ordered []string, mine []zklayout.SeqName, err error) {
	names, _, err := w.zk.Children(ctx, w.l.StagingService(w.svc))
	if err != nil {
		return nil, nil, err
	}
	seqs, bad := zklayout.SortSeq(names)
	// Such a child is outside the queue's order, so it blocks nobody; the operator removes it.
	// Said once per znode (badStaging forgets the children that are gone).
	for n := range w.badStaging {
		if !slices.Contains(names, n) {
			delete(w.badStaging, n)
		}
	}
	for _, b := range bad {
		if !w.badStaging[b] {
			w.log.Error(zklayout.ErrMalformed, "ignoring staging child that is not <node>-<counter>", "znode", w.l.StagingChild(w.svc, b))
			w.badStaging[b] = true
		}
	}
	for _, s := range seqs {
		ordered = append(ordered, s.Child)
		if s.Name == w.a.cfg.Node {
			mine = append(mine, s)
		}
	}
	return ordered, mine, nil
}

// leaveQueue deletes this node's staging children except keep.
func (w *worker) leaveQueue(ctx context.Context, keep string) error {
	_, mine, err := w.queue(ctx)
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, m := range mine {
		if m.Child == keep {
			continue
		}
		if err := w.zk.Delete(ctx, w.l.StagingChild(w.svc, m.Child), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			return err
		}
	}
	return nil
}

// ensureStaged makes sure this node has exactly one staging child, of this session, ready for
// target, and returns its name. Children of dead sessions or other versions are removed.
func (w *worker) ensureStaged(ctx context.Context, target string) (string, error) {
	_, mine, err := w.queue(ctx)
	if err != nil {
		return "", err
	}
	sid := w.zk.Session().ID
	keep := ""
	for _, m := range mine {
		data, st, err := w.zk.Get(ctx, w.l.StagingChild(w.svc, m.Child))
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil {
			return "", err
		}
		var s zklayout.Staged
		derr := zklayout.Decode(data, &s)
		if derr != nil {
			// This node's own part of the tree: leaveQueue below removes it.
			w.log.Error(derr, "removing this node's malformed staging child", "znode", w.l.StagingChild(w.svc, m.Child), "owner", fmt.Sprintf("0x%x", st.EphemeralOwner))
		}
		if keep == "" && st.EphemeralOwner == sid && derr == nil && s.Version == target && s.State == zklayout.StagedReady {
			keep = m.Child
		}
	}
	if err := w.leaveQueue(ctx, keep); err != nil {
		return "", err
	}
	if keep != "" {
		return keep, nil
	}
	data, err := zklayout.Encode(&zklayout.Staged{Node: w.a.cfg.Node, Version: target, State: zklayout.StagedReady,
		PinnedBytes: w.warm.Bytes, Since: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	created, err := w.zk.Create(ctx, w.l.StagingPrefix(w.svc, w.a.cfg.Node), data, zkclient.EphemeralSequential)
	if err != nil {
		return "", fmt.Errorf("stage %s/%s: %w", w.svc, target, err)
	}
	w.log.Info("staged: ready to roll", "version", target, "znode", created)
	return created[strings.LastIndex(created, "/")+1:], nil
}

// myTurn reports whether the service heads the deploy queue (or has a catch-up entry for
// target anywhere in it) and this node is the first waiter of the staging queue. Otherwise it
// arms exactly the watch that can change the answer.
func (w *worker) myTurn(ctx context.Context, child, target string) (bool, error) {
	entries, err := w.children(ctx, w.l.Deploy())
	if err != nil {
		return false, err
	}
	ordered, _ := zklayout.SortSeq(entries)
	if len(ordered) == 0 {
		return false, w.waiting("deploy queue is empty")
	}
	hp := w.l.DeployEntry(ordered[0].Child)
	data, _, err := w.zk.Get(ctx, hp)
	if errors.Is(err, zkclient.ErrNoNode) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var head zklayout.DeployEntry
	// An entry's signature binds its service's prefix (ZooKeeper picks the counter).
	if err := w.decodeSigned(hp, w.l.DeployPrefix(ordered[0].Name), target, data, &head); err != nil {
		return false, w.waiting("deploy queue head is malformed or not validly signed; not acting on it", "znode", ordered[0].Child, "err", err.Error())
	}
	if head.Service != w.svc {
		catchUp, err := w.catchUpQueued(ctx, ordered[1:], target)
		if err != nil {
			return false, err
		}
		if !catchUp {
			return false, w.waiting("another service heads the deploy queue", "head", head.Service)
		}
	}
	queue, _, err := w.queue(ctx)
	if err != nil {
		return false, err
	}
	at := child
	for {
		pred, found := rollout.Predecessor(queue, at)
		if !found {
			return false, fmt.Errorf("own staging child %s vanished", child)
		}
		if pred == "" {
			return true, nil
		}
		// Upgrading members form a prefix of the queue, so an upgrading predecessor means every
		// member ahead is upgrading: this node is the first waiter.
		pp := w.l.StagingChild(w.svc, pred)
		pdata, pst, err := w.getExisting(ctx, pp)
		if errors.Is(err, zkclient.ErrNoNode) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if pst.EphemeralOwner == 0 {
			// Agents stage only ephemeral children, so a persistent one was made by hand: no
			// agent stands behind it and none will ever decide through it. It is not part of
			// the queue; the operator removes it.
			if !w.badStaging[pred] {
				w.log.Error(zklayout.ErrMalformed, "skipping a persistent staging child no agent made", "znode", pp)
				w.badStaging[pred] = true
			}
			at = pred
			continue
		}
		var ps zklayout.Staged
		if err := zklayout.Decode(pdata, &ps); err != nil {
			// It may be a newer agent's (another schema), which could decide: never skip it.
			// Its owner's session removes it (a dead one expires); the data watch wakes us then.
			return false, w.waiting("predecessor in the staging queue is malformed; waiting for its owner's session to remove it",
				"znode", pp, "owner", fmt.Sprintf("0x%x", pst.EphemeralOwner), "err", err.Error())
		}
		if ps.State == zklayout.StagedUpgrading {
			return true, nil
		}
		return false, w.waiting("queued behind "+ps.Node, "predecessor", pred)
	}
}

// distributed applies the distribution gate: enough nodes must have the plan's version staged
// (or already run it) before any node stops for it; by default every online node. While it
// does not hold, the first waiter (the only one asking) watches the staging queue.
func (w *worker) distributed(ctx context.Context, plan *zklayout.Plan) (ok bool, have, need int, err error) {
	names, err := w.children(ctx, w.l.StagingService(w.svc))
	if err != nil {
		return false, 0, 0, err
	}
	ready := map[string]bool{}
	seqs, _ := zklayout.SortSeq(names)
	for _, s := range seqs {
		ready[s.Name] = true
	}
	// The gate also watches current/<svc>: a node that goes down (or a stray registration that
	// is removed) may be all the gate was waiting for.
	online, err := w.online(ctx, plan, true)
	if err != nil {
		return false, 0, 0, err
	}
	for n, v := range online {
		if v == plan.Version {
			ready[n] = true
		}
	}
	if plan.MinStaged != nil {
		return len(ready) >= *plan.MinStaged, len(ready), *plan.MinStaged, nil
	}
	// Default: every online node has it staged or runs it.
	for n := range online {
		if ready[n] {
			have++
		}
	}
	return have == len(online), have, len(online), nil
}

// quorumAllows applies the quorum rule: this node may stop only if the other online nodes
// still meet minAvailable. Only registrations that count (see online) are counted, so a stray
// znode never stands in for a running node. While it does not hold, the first waiter watches
// the online set.
func (w *worker) quorumAllows(ctx context.Context, plan *zklayout.Plan) (bool, int, error) {
	online, err := w.online(ctx, plan, true)
	if err != nil {
		return false, 0, err
	}
	return rollout.MayStop(len(online), plan.MinAvailable), len(online), nil
}

// decide takes this node offline and marks it upgrading in one transaction. It fails if the
// staging child changed or vanished (lost turn, expired session): nothing is stopped then.
// Two deciders never both pass on a stale view: a node decides only as first waiter, which it
// becomes only after seeing its predecessor's upgrading mark, written in the same transaction
// as the predecessor's removal from current/, so its count of online nodes includes that removal.
func (w *worker) decide(ctx context.Context, child, target string, failuresVersion, round int32) error {
	data, err := zklayout.Encode(&zklayout.Staged{Node: w.a.cfg.Node, Version: target, State: zklayout.StagedUpgrading,
		Since: time.Now().UTC(), RollCall: round})
	if err != nil {
		return err
	}
	// From here on this node no longer answers roll calls: the registration goes with the
	// decision (if the transaction fails, the next step's register sets it again).
	w.registered.Store(false)
	return w.zk.Multi(ctx,
		zkclient.CheckOp(w.l.FailureService(w.svc), failuresVersion),
		zkclient.SetOp(w.l.StagingChild(w.svc, child), data, 0),
		zkclient.DeleteOp(w.l.CurrentNode(w.svc, w.a.cfg.Node), -1))
}

// upgrade stops the old version, switches, starts the new one and checks it. On success the
// node re-registers on the new version and leaves the queue; on failure it rolls back, records
// the failure (halting the rollout), re-registers on the old version and leaves the queue.
func (w *worker) upgrade(root, ctx context.Context, rel *zklayout.Release, from, child string) error {
	cfg := w.a.cfg
	to := rel.Version
	w.log.Info("upgrading: stopping service", "from", from, "to", to)
	stopped := time.Now()
	if err := cfg.Backend.Stop(root, w.svc); err != nil {
		cfg.Metrics.upgraded(w.svc, ResultError, 0)
		return fmt.Errorf("upgrade %s %s->%s: stop: %w", w.svc, from, to, err)
	}
	cfg.Metrics.down(w.svc)
	if err := cfg.Store.Switch(w.svc, to); err != nil {
		cfg.Metrics.upgraded(w.svc, ResultError, 0)
		return fmt.Errorf("upgrade %s %s->%s: %w", w.svc, from, to, err)
	}
	herr := w.runAndCheck(root, rel)
	if herr == nil {
		cfg.Metrics.upgraded(w.svc, ResultSuccess, time.Since(stopped))
		if err := w.finish(root, child, to); err != nil {
			return err
		}
		cfg.Metrics.online(w.svc, to)
		w.log.Info("upgraded", "version", to)
		w.holdWarm(root, to)
		if err := cfg.Store.Prune(w.svc); err != nil {
			w.log.Error(err, "prune old versions")
		}
		return nil
	}
	w.log.Error(herr, "new version unhealthy; rolling back", "from", from, "to", to)
	cfg.Metrics.upgraded(w.svc, ResultRollback, 0)
	w.unwarm()
	_ = cfg.Backend.Stop(root, w.svc)
	w.recordFailure(root, to, zklayout.FailureHealthCheck, herr)
	if err := cfg.Store.Switch(w.svc, from); err != nil {
		return fmt.Errorf("rollback %s to %s: %w", w.svc, from, err)
	}
	prev, err := w.release(root, from)
	if err != nil {
		return fmt.Errorf("rollback %s to %s: %w", w.svc, from, err)
	}
	if err := w.runAndCheck(root, prev); err != nil {
		w.log.Error(err, "previous version is unhealthy too after rollback", "version", from)
	}
	return w.finish(root, child, from)
}

// finish re-registers on version and leaves the staging queue in one transaction.
func (w *worker) finish(ctx context.Context, child, version string) error {
	data, err := w.registration(version)
	if err != nil {
		return err
	}
	err = w.zk.Multi(ctx,
		zkclient.CreateOp(w.l.CurrentNode(w.svc, w.a.cfg.Node), data, zkclient.Ephemeral),
		zkclient.DeleteOp(w.l.StagingChild(w.svc, child), -1))
	if err != nil {
		// The session ended mid-upgrade: the next step registers the running version.
		return fmt.Errorf("re-register %s on %s: %w", w.svc, version, err)
	}
	w.setRegistered()
	return nil
}

// recordFailure writes failures/<svc>/<node>. Best effort: the log has it either way.
func (w *worker) recordFailure(ctx context.Context, version, kind string, cause error) {
	reason := cause.Error()
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	data, err := zklayout.Encode(&zklayout.Failure{Node: w.a.cfg.Node, Version: version, Kind: kind, Reason: reason, Time: time.Now().UTC()})
	if err == nil {
		err = w.zk.EnsurePath(ctx, w.l.FailureService(w.svc))
	}
	if err == nil {
		// Bumping failures/<svc>'s version in the same transaction makes concurrent decisions
		// (which check that version) fail: nobody stops after a failure is recorded.
		p := w.l.Failure(w.svc, w.a.cfg.Node)
		bump := zkclient.SetOp(w.l.FailureService(w.svc), nil, -1)
		old, _, gerr := w.zk.Get(ctx, p)
		var prev zklayout.Failure
		switch {
		case errors.Is(gerr, zkclient.ErrNoNode):
			err = w.zk.Multi(ctx, bump, zkclient.CreateOp(p, data, zkclient.Persistent))
		case gerr != nil:
			err = gerr
		case kind != zklayout.FailureHealthCheck && zklayout.Decode(old, &prev) == nil && prev.Kind == zklayout.FailureHealthCheck:
			// A health failure halts the rollout; a lesser failure must not erase it.
			w.log.Error(cause, "failure not recorded: a health check failure stays recorded", "kind", kind, "version", version)
			return
		default:
			err = w.zk.Multi(ctx, bump, zkclient.SetOp(p, data, -1))
		}
	}
	if err != nil {
		w.log.Error(err, "could not record failure in ZooKeeper", "kind", kind, "version", version, "cause", reason)
	}
}

// clearArtifactFailure removes this node's artifact failure once a fetch succeeded.
func (w *worker) clearArtifactFailure(ctx context.Context) {
	w.clearFailure(ctx, zklayout.FailureArtifact)
}

// clearFailure removes this node's failure record if it is of kind.
func (w *worker) clearFailure(ctx context.Context, kind string) {
	p := w.l.Failure(w.svc, w.a.cfg.Node)
	data, st, err := w.zk.Get(ctx, p)
	if err != nil {
		return
	}
	var f zklayout.Failure
	if zklayout.Decode(data, &f) == nil && f.Kind == kind {
		_ = w.zk.Delete(ctx, p, st.Version)
	}
}

// completeIfDone removes the service's deploy entries once every online node runs the plan's
// version and nobody is staged or upgrading, so the next service's rollout can begin even when
// the operator is down.
func (w *worker) completeIfDone(ctx context.Context, plan *zklayout.Plan) error {
	entries, _, err := w.zk.Children(ctx, w.l.Deploy())
	if err != nil {
		return err
	}
	var ours []string
	for _, e := range entries {
		s, err := zklayout.ParseSeq(e)
		if err == nil && s.Name == w.svc {
			ours = append(ours, e)
		}
	}
	if len(ours) == 0 {
		return nil
	}
	queue, _, err := w.queue(ctx)
	if err != nil {
		return err
	}
	for _, c := range queue {
		// Only a node's (ephemeral) child can be an upgrade under way; a persistent stray
		// holds nothing back (myTurn skips it too).
		_, st, err := w.zk.Get(ctx, w.l.StagingChild(w.svc, c))
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil || st.EphemeralOwner != 0 {
			return err
		}
	}
	online, err := w.online(ctx, plan, false)
	if err != nil {
		return err
	}
	// Same rule as the operator's (rollout.Complete): the quorum, at least one, must be online on it.
	if len(online) < max(1, plan.MinAvailable) {
		return nil
	}
	for _, v := range online {
		if v != plan.Version {
			return nil
		}
	}
	for _, e := range ours {
		data, st, err := w.zk.Get(ctx, w.l.DeployEntry(e))
		if err != nil {
			continue
		}
		var d zklayout.DeployEntry
		if zklayout.Decode(data, &d) != nil || d.Version != plan.Version {
			continue
		}
		if err := w.zk.Delete(ctx, w.l.DeployEntry(e), st.Version); err == nil {
			w.log.Info("service rollout complete; removed its deploy queue entry", "version", plan.Version, "entry", e)
		}
	}
	return nil
}

// catchUpQueued reports whether entries hold a catch-up entry of this service for target (the
// operator queued the service again for nodes that fell behind after its rollout; see
// zklayout.DeployEntry.CatchUp). Entries that vanish or do not decode are passed over.
func (w *worker) catchUpQueued(ctx context.Context, entries []zklayout.SeqName, target string) (bool, error) {
	for _, e := range entries {
		if e.Name != w.svc {
			continue
		}
		ep := w.l.DeployEntry(e.Child)
		data, _, err := w.zk.Get(ctx, ep)
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil {
			return false, err
		}
		var d zklayout.DeployEntry
		if w.decodeSigned(ep, w.l.DeployPrefix(e.Name), target, data, &d) == nil && d.Service == w.svc && d.Version == target && d.CatchUp {
			return true, nil
		}
	}
	return false, nil
}

// pin locks dir's files in the page cache within the node's budget; the zero Pinned when
// pinning is off or impossible (said once: the node goes on unpinned).
func (w *worker) pin(ctx context.Context, dir string) pagecache.Pinned {
	p := w.a.cfg.Pinner
	if p == nil {
		return pagecache.Pinned{}
	}
	pinned, err := p.Pin(ctx, dir)
	switch {
	case errors.Is(err, pagecache.ErrNoLockCapability):
		if !w.lockWarned {
			w.log.Info("cannot lock memory (needs CAP_IPC_LOCK); going on without pinning the page cache", "err", err.Error())
			w.lockWarned = true
		}
	case err != nil:
		w.log.Error(err, "pin page cache", "dir", dir)
	}
	return pinned
}

func (w *worker) unpin(p pagecache.Pinned) {
	if w.a.cfg.Pinner != nil {
		w.a.cfg.Pinner.Unpin(p)
	}
}

// prewarm reads the staged version into the page cache and pins it, once per version, so it
// starts hot after the switch.
func (w *worker) prewarm(ctx context.Context, version string) {
	if w.a.cfg.Pinner == nil || w.warmVersion == version {
		return
	}
	w.unwarm()
	dir, err := w.a.cfg.Store.VersionDir(w.svc, version)
	if err != nil {
		w.log.Error(err, "prewarm staged version", "version", version)
		return
	}
	if _, err := pagecache.Prewarm(ctx, dir, pagecache.DefaultPrewarmChunk); err != nil {
		w.log.Error(err, "prewarm staged version", "version", version)
	}
	w.warm, w.warmVersion = w.pin(ctx, dir), version
	w.log.V(1).Info("staged version pre-warmed", "version", version, "pinnedBytes", w.warm.Bytes)
}

func (w *worker) unwarm() {
	w.unpin(w.warm)
	w.warm, w.warmVersion = pagecache.Pinned{}, ""
}

// holdWarm keeps the new version pinned until it has been healthy for PinHold, then lets the
// page cache manage it again. The hold ends early with the agent (ctx).
func (w *worker) holdWarm(ctx context.Context, version string) {
	if w.a.cfg.Pinner == nil || w.warmVersion != version {
		return
	}
	pinned, pinner, hold := w.warm, w.a.cfg.Pinner, w.a.cfg.PinHold
	w.warm, w.warmVersion = pagecache.Pinned{}, ""
	go func() { _ = pinner.HoldFor(ctx, pinned, hold) }()
}

// expand replaces $(NAME) references to known variables; unknown references stay as written.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$(") {
		return s
	}
	for k, v := range vars {
		s = strings.ReplaceAll(s, "$("+k+")", v)
	}
	return s
}

func expandAll(in []string, vars map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, vars)
	}
	return out
}
