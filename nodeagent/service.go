package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

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

	// reader reads the service's snapshots (and caches its registrations).
	reader *rollout.Reader
	// need is what the next read includes beyond the base (rollout.Need): what the last
	// decision looked at.
	need rollout.Need
	// armed holds the one-shot watches still pending, keyed by kind and path, so a path is never
	// watched twice; waitOn are those the last step named, which wake a wait.
	armed  map[string]zkclient.Watch
	waitOn []string
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
	// ans answers the service's roll calls; kicked after each registration.
	ans *answerer
	// registered is set while this session's registration of the service stands (created or
	// checked by this worker, not yet deleted by a decision). The answerer answers only then:
	// a previous session's registration outlives its agent, and a new agent whose process runs
	// but has not passed its health check must not lend that stale registration its answer.
	registered atomic.Bool
	// said holds what was logged about ignored znodes (keyed by znode and reason), so each is
	// said once while it lasts.
	said map[string]bool
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
	w := &worker{a: a, svc: svc, log: a.log.WithValues("service", svc), zk: a.cfg.ZK, l: a.cfg.Layout,
		armed: map[string]zkclient.Watch{}, said: map[string]bool{}, sigRecord: true}
	w.reader = rollout.NewReader(a.cfg.ZK, a.cfg.Layout, svc, a.cfg.Node, w.verify)
	return w
}

// verify checks a signed znode with the agent's trusted keys (Config.Trust) and decodes it.
func (w *worker) verify(sigPath string, data []byte, into zklayout.Payload) (bool, error) {
	err := zksign.Decode(w.a.cfg.Trust, sigPath, data, into)
	return err != nil && zksign.IsSignatureError(err), err
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
	w.noteRefused(err, version)
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

// waitAny blocks until a watch the last step named fires, retryAt passes, or ctx ends.
// Watches armed earlier and not named stay armed: named again later, one that fired meanwhile
// wakes the wait at once.
func (w *worker) waitAny(ctx context.Context) {
	keys := make([]string, 0, len(w.waitOn))
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
	for _, k := range w.waitOn {
		wt, ok := w.armed[k]
		if !ok || slices.Contains(keys, k) {
			continue
		}
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
	// The Fetch step named the plan's watch: armed before the step ran.
	key := watchKey(rollout.Watch{Kind: rollout.WatchData, Path: w.l.StagingService(w.svc)})
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

// start brings the stopped service up on st.Version: the most popular version among online
// peers (ties: the plan's target; rollout.Next chose it). Starting never lowers availability,
// so it needs no turn. The next step registers it.
func (w *worker) start(root, ctx context.Context, st rollout.Step) error {
	v := st.Version
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
	w.log.Info("starting service", append([]any{"version", v}, st.Fields...)...)
	if err := w.runAndCheck(root, rel); err != nil {
		_ = w.a.cfg.Backend.Stop(root, w.svc)
		w.retryAt = time.Now().Add(w.a.cfg.MaxRetryInterval)
		return w.waiting("service did not come up healthy; retrying later", "version", v, "err", err.Error())
	}
	return nil
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

// hold keeps health-checking the version just started for d (health.Hold), during naming
// why in a failure.
func (w *worker) hold(ctx context.Context, rel *zklayout.Release, d time.Duration, during string) error {
	cfg := w.a.cfg
	_, _, env := w.runEnv(rel)
	restarts := cfg.Backend.Status(w.svc).Restarts
	err := health.Hold(ctx, rel.HealthCheck, cfg.Address, env, func() error {
		s := cfg.Backend.Status(w.svc)
		if !s.Running || s.Restarts > restarts {
			return fmt.Errorf("process exited: %s", s.LastExit)
		}
		return nil
	}, d, during)
	if err != nil && ctx.Err() == nil {
		w.checked = ""
		cfg.Metrics.healthCheckFailed(w.svc)
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

// maxDecisionBytes bounds a decision's transaction: half the agents' send buffer, well under
// ZooKeeper's request bound (jute.maxbuffer, 1 MiB by default). opOverhead is a generous
// estimate of the framing of one set and one delete operation beside their paths and data.
const (
	maxDecisionBytes = zkclient.AgentSendBuffer / 2
	opOverhead       = 64
)

// decide takes this node offline and marks it upgrading in one transaction. It fails if the
// staging child changed or vanished (lost turn, expired session): nothing is stopped then.
// Two deciders never both pass on a stale view: a node decides only as first waiter, which it
// becomes only after seeing its predecessor's upgrading mark, written in the same transaction
// as the predecessor's removal from current/, so its count of online nodes includes that removal.
//
// It returns how many nodes of admit it admitted (this one first).
func (w *worker) decide(ctx context.Context, st rollout.Step, admit []rollout.Admitted, round int32) (int, error) {
	ops := []zkclient.Op{zkclient.CheckOp(w.l.FailureService(w.svc), st.FailuresVersion)}
	marks, err := rollout.Marks(w.a.cfg.Node, st.Version, admit, round, time.Now().UTC())
	if err != nil {
		return 0, err
	}
	size := 0
	for i, m := range marks {
		child, reg := w.l.StagingChild(w.svc, m.Child), w.l.CurrentNode(w.svc, m.Node)
		// Long node names make long marks: the batch stops where the transaction would
		// outgrow the send buffer. Admitting a prefix of it is always safe.
		if size += len(child) + len(m.Data) + len(reg) + opOverhead; i > 0 && size > maxDecisionBytes {
			w.log.Info("batch cut to fit one transaction", "admitted", i, "batch", len(marks), "bytes", maxDecisionBytes)
			break
		}
		ops = append(ops, zkclient.SetOp(child, m.Data, m.ChildVersion), zkclient.DeleteOp(reg, -1))
	}
	// From here on this node no longer answers roll calls: the registration goes with the
	// decision (if the transaction fails, the next step's register sets it again).
	w.registered.Store(false)
	return len(ops) / 2, w.zk.Multi(ctx, ops...)
}

// upgrade stops the old version, switches, starts the new one and checks it. On success the
// node re-registers on the new version and leaves the queue (a canary then keeps checking it
// through its bake); on failure it rolls back, records the failure (halting the rollout),
// re-registers on the old version and leaves the queue.
func (w *worker) upgrade(root, ctx context.Context, rel *zklayout.Release, from, child string, hold, bake time.Duration) error {
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
	downtime := time.Since(stopped)
	if herr == nil && hold > 0 {
		// The plan's minimum healthy time: the node stays unregistered, its mark standing (in
		// flight for the gates, offline for the quorum), until the new version has stayed
		// healthy this long.
		w.log.Info("healthy; holding before counting as upgraded", "version", to, "minHealthyTime", hold)
		herr = w.hold(root, rel, hold, "during the minimum healthy time")
	}
	if herr == nil {
		cfg.Metrics.upgraded(w.svc, ResultSuccess, downtime)
		// The bake counts from the registration (its since, a little later than now): the
		// checks end no later than the moment a decider may judge the canaries baked.
		baked := time.Now().Add(bake)
		if err := w.finish(root, child, to); err != nil {
			return err
		}
		cfg.Metrics.online(w.svc, to)
		w.log.Info("upgraded", "version", to)
		w.holdWarm(root, to)
		if bake > 0 {
			return w.bake(root, ctx, rel, from, baked)
		}
		w.prune()
		return nil
	}
	w.log.Error(herr, "new version unhealthy; rolling back", "from", from, "to", to)
	return w.rollBack(root, rel, from, herr, func() error { return w.finish(root, child, from) })
}

func (w *worker) prune() {
	if err := w.a.cfg.Store.Prune(w.svc); err != nil {
		w.log.Error(err, "prune old versions")
	}
}

// rollBack stops the unhealthy version rel, records its failure herr unless nil (recorded
// already; it halts the rollout beyond maxFailures), switches back to from, starts and checks
// it, and registers it with register.
func (w *worker) rollBack(root context.Context, rel *zklayout.Release, from string, herr error, register func() error) error {
	cfg := w.a.cfg
	to := rel.Version
	cfg.Metrics.upgraded(w.svc, ResultRollback, 0)
	w.unwarm()
	_ = cfg.Backend.Stop(root, w.svc)
	if herr != nil {
		w.recordFailure(root, to, zklayout.FailureHealthCheck, herr)
	}
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
	return register()
}

// bake keeps checking the new version of a node that went to it during a canary phase,
// registered, until until (the phase's bake time after its registration), so that the phase
// promotes itself on healthy canaries, not merely registered ones. A plan change (promoted,
// paused, a new version) or the session's end stops the checks. A failure meanwhile is a
// failed health check: the node records it, leaves current/ (it serves nothing healthy: it
// must not count for the quorum), rolls back as a failed upgrade does, and registers its
// previous version again.
func (w *worker) bake(root, ctx context.Context, rel *zklayout.Release, from string, until time.Time) error {
	defer w.prune()
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, _, plan, err := w.zk.GetW(bctx, w.l.StagingService(w.svc)); err != nil {
		// A ZooKeeper hiccup must not cost the checks: they run to the bake's end instead.
		w.log.Error(err, "canary bake: cannot watch the plan; checking until the bake ends", "version", rel.Version)
	} else {
		go func() { // owned by bake: ends with bctx at the latest
			if plan.Wait(bctx) == nil {
				cancel()
			}
		}()
	}
	w.log.Info("canary: checking the new version's health through the bake", "version", rel.Version, "until", until.UTC().Format(time.RFC3339))
	herr := w.hold(bctx, rel, d, "during the canary's bake")
	if herr == nil || bctx.Err() != nil {
		return nil
	}
	w.log.Error(herr, "canary unhealthy; leaving current/ and rolling back", "from", rel.Version, "to", from)
	// The failure first: it halts the rollout (beyond maxFailures) and fails any decision in
	// flight. Leaving current/ first would let another node take the lost canary's place in
	// between (an e2e run saw a node decide in that gap).
	w.recordFailure(ctx, rel.Version, zklayout.FailureHealthCheck, herr)
	w.registered.Store(false)
	if err := w.zk.Delete(ctx, w.l.CurrentNode(w.svc, w.a.cfg.Node), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
		return fmt.Errorf("canary bake of %s %s: leave current/: %w", w.svc, rel.Version, err)
	}
	return w.rollBack(root, rel, from, nil, func() error {
		data, err := w.registration(from)
		if err != nil {
			return err
		}
		if _, err := w.zk.Create(ctx, w.l.CurrentNode(w.svc, w.a.cfg.Node), data, zkclient.Ephemeral); err != nil {
			return fmt.Errorf("re-register %s on %s: %w", w.svc, from, err)
		}
		w.setRegistered()
		return nil
	})
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
