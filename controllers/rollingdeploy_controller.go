// Package controllers holds the RollingDeploy reconciler: it publishes each RollingDeploy as
// releases, plans and deploy-queue entries in ZooKeeper and reports the rollout the node agents
// carry out. The rollout logic itself lives in internal/plan; this package only orchestrates.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/seeder"
	"github.com/rollkeeper/rollkeeper/internal/zkcache"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zkguard"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
)

// Finalizer keeps a RollingDeploy until its znodes are cleaned up.
const Finalizer = "rollkeeper.io/zookeeper-cleanup"

// DefaultResync is the slow requeue while a rollout is incomplete; ZooKeeper watches do the
// real work, this only bounds how stale status can get if an event is lost.
const DefaultResync = 30 * time.Second

// RollingDeployReconciler reconciles RollingDeploy objects into ZooKeeper.
type RollingDeployReconciler struct {
	client.Client
	// APIReader reads the API server without the cache, to confirm a RollingDeploy is gone
	// before its leftovers in ZooKeeper are deleted (nil: the cached client).
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	ZK        *zkclient.Client
	Layout    zklayout.Layout
	// Resync is the requeue interval while a rollout is incomplete (0: DefaultResync).
	Resync time.Duration
	// Seeder, if set, publishes each target version as a torrent and seeds it until the
	// service's rollout is complete (peer-to-peer distribution).
	Seeder *seeder.Seeder
	// Guard, if set, must find rollkeeper's ZooKeeper tree locked to rollkeeper's identity for
	// a pass to write plans (the manager re-checks it after every reconnection).
	Guard *zkguard.Guard
	// Signer, if set, signs every plan, release and deploy entry written (zksign), and Trust
	// verifies them when read back: one that does not verify is malformed (rewritten or
	// reported like any malformed znode). Both nil: --insecure-allow-unsigned-plans.
	Signer *zksign.Signer
	Trust  zksign.Verifier
	// PublishHook, if set, is called with each step of publication (Step*) and a target
	// version as a pass reaches it (the manager's test hook: it may block for good).
	PublishHook func(step, version string)

	watcher *zkWatcher
	// cache answers the status pass's reads of plans, registrations, staging queues and
	// progress from memory until their watches fire (zkcache): a pass costs O(what changed).
	// Reads that precede a write go to ZooKeeper directly.
	cache *zkcache.Cache
	// testHook, when set, is called at every position a pass records (tests make it panic).
	testHook atomic.Pointer[phaseHook]
	// nodeSets remembers the RollingDeployNodeSets last written (mirrorNodes).
	nodeSets nodeSetWrites
}

// scope carries one pass's state between its phases.
type scope struct {
	rd *v1alpha1.RollingDeploy
	// order is the deploy order (set by the validation phase); specs the services by name.
	order []string
	specs map[string]v1alpha1.ServiceSpec
	// selected are the Node names per service and minAvailable the resolved quorums (node phase).
	selected     map[string][]string
	minAvailable map[string]int
	// minStaged is the resolved distribution gate (nil: every online node), gates the
	// resolved gates beyond the quorum.
	minStaged map[string]*int
	gates     map[string]plan.Gates
	// state is what ZooKeeper holds per service (read phase).
	state map[string]*serviceState
	// queue is the decoded deploy queue and queueMalformed its unreadable entries (read phase).
	queue          []deployEntry
	queueMalformed []malformedEntry
	// sum is what status is computed from (every phase may set it).
	sum summary
	// dist is the seeder's state of each incomplete service's target (seed phase); distWaits
	// says why a service's new version is not planned yet (publish phase).
	dist      map[string]seeder.State
	distWaits map[string]string
	// pos is where the pass is (for a panic report) and hook the test hook (see at).
	pos  position
	hook phaseHook
}

// +kubebuilder:rbac:groups=rollkeeper.io,resources=rollingdeploys,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=rollkeeper.io,resources=rollingdeploys/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=rollkeeper.io,resources=rollingdeploys/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// The metrics endpoint's authentication (TokenReview) and authorization (SubjectAccessReview)
// of its scrapers, see cmd/manager.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Reconcile publishes one RollingDeploy and reports its rollout.
func (r *RollingDeployReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	log := logf.FromContext(ctx)
	rd := &v1alpha1.RollingDeploy{}
	if err := r.Get(ctx, req.NamespacedName, rd); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get RollingDeploy %s: %w", req.Name, err)
	}
	if !rd.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, rd)
	}
	if !controllerutil.ContainsFinalizer(rd, Finalizer) {
		base := rd.DeepCopy()
		controllerutil.AddFinalizer(rd, Finalizer)
		if err := r.Patch(ctx, rd, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer to RollingDeploy %s: %w", rd.Name, err)
		}
	}

	before := rd.DeepCopy()
	if r.Guard != nil {
		if gerr := r.Guard.Err(); gerr != nil {
			// Plans in a tree others may change would be obeyed next to anyone's: write none.
			applySummary(&rd.Status, rd.Generation, summary{outcome: outcomeZooKeeper, reason: v1alpha1.ReasonZooKeeperInsecure,
				message: "not writing plans to ZooKeeper: " + gerr.Error()})
			if !apiequality.Semantic.DeepEqual(before.Status, rd.Status) {
				if err := r.Status().Patch(ctx, rd, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
					return ctrl.Result{}, fmt.Errorf("patch status of RollingDeploy %s: %w", rd.Name, err)
				}
				emitTransitions(r.Recorder, rd, &before.Status, &rd.Status)
			}
			return ctrl.Result{RequeueAfter: r.resync()}, nil
		}
	}
	s := &scope{rd: rd, hook: r.hook()}
	defer func() {
		// observedGeneration moves only when the whole pass succeeded.
		if reterr == nil {
			rd.Status.ObservedGeneration = rd.Generation
		}
		deployMetrics.observe(rd.Name, &rd.Status)
		if apiequality.Semantic.DeepEqual(before.Status, rd.Status) {
			return
		}
		if err := r.Status().Patch(ctx, rd, client.MergeFrom(before)); err != nil {
			if !apierrors.IsNotFound(err) {
				reterr = kerrors.NewAggregate([]error{reterr, fmt.Errorf("patch status of RollingDeploy %s: %w", rd.Name, err)})
			}
			return
		}
		emitTransitions(r.Recorder, rd, &before.Status, &rd.Status)
	}()
	// Deferred after the status patch, so it runs first and the patch reports the panic.
	defer r.recoverPanic(ctx, s, &reterr)

	res, err := r.reconcileNormal(ctx, s)
	if err != nil && zkDown(err) {
		// Returning the error requeues with the controller's exponential backoff.
		applySummary(&rd.Status, rd.Generation, summary{outcome: outcomeZooKeeper, reason: v1alpha1.ReasonZooKeeperError,
			message: fmt.Sprintf("cannot reach ZooKeeper, status may be stale: %v", err)})
		return ctrl.Result{}, err
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	applySummary(&rd.Status, rd.Generation, s.sum)
	r.applyAbort(rd, &before.Status)
	logMalformed(log, &before.Status, &rd.Status)
	if retry, err := r.mirrorNodes(ctx, s); err != nil || retry {
		// The per-node mirror is secondary: a failure is logged and retried, status still goes.
		if err != nil {
			log.Error(err, "mirror node states into RollingDeployNodeSets")
		}
		if res.RequeueAfter == 0 || res.RequeueAfter > mirrorRetry {
			res.RequeueAfter = mirrorRetry
		}
	}
	return res, nil
}

// logMalformed logs unreadable znodes when the report about them changes (not on every pass).
func logMalformed(log logr.Logger, prev, cur *v1alpha1.RollingDeployStatus) {
	c := meta.FindStatusCondition(cur.Conditions, v1alpha1.ConditionDegraded)
	if c == nil || c.Reason != ReasonMalformedZnode {
		return
	}
	if p := meta.FindStatusCondition(prev.Conditions, v1alpha1.ConditionDegraded); p != nil && p.Message == c.Message {
		return
	}
	log.Info("ignoring znodes with malformed payloads", "detail", c.Message)
}

func (r *RollingDeployReconciler) resync() time.Duration {
	if r.Resync > 0 {
		return r.Resync
	}
	return DefaultResync
}

// reconcileNormal runs the phases of a live RollingDeploy. A phase that ends the pass early
// (invalid spec, waiting for another RollingDeploy, a blocking znode) sets s.sum and returns.
func (r *RollingDeployReconciler) reconcileNormal(ctx context.Context, s *scope) (ctrl.Result, error) {
	s.at("validate", "", "")
	if done := r.validate(ctx, s); done {
		return ctrl.Result{}, nil
	}
	s.at("resolve nodes", "", "")
	if done, err := r.resolveNodes(ctx, s); done || err != nil {
		return ctrl.Result{}, err
	}
	r.watcher.Track(s.rd.Name, s.order)
	if err := r.read(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.repair(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	s.at("drop orphan entries", "", r.Layout.Deploy())
	if err := r.dropOrphanEntries(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	s.at("claim", "", "")
	if done, err := r.claim(ctx, s); done || err != nil {
		if err == nil {
			// A deploy that must wait (another took one of its services over) still drops its
			// entries of services it completed: the pass that would prune them may never come
			// before the other deploy needs the queue, and a completed entry at the head would
			// hold that deploy back for good.
			kept, derr := r.deleteEntries(ctx, s.queue, s.rd.Name, func(e zklayout.DeployEntry) bool {
				spec, ok := s.specs[e.Service]
				return ok && e.Version == spec.Version && s.complete(e.Service)
			})
			if derr != nil {
				return ctrl.Result{}, derr
			}
			s.queue = kept
		}
		r.digest(s)
		return ctrl.Result{RequeueAfter: r.resync()}, err
	}
	if err := r.repairReleases(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	s.at("publish releases", "", "")
	r.reach(s, StepBeforeRelease)
	if done, err := r.publishReleases(ctx, s); done || err != nil {
		r.digest(s)
		return ctrl.Result{RequeueAfter: r.resync()}, err
	}
	r.reach(s, StepAfterRelease)
	s.at("seed", "", "")
	r.seed(s)
	if err := r.repairPlans(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	s.at("publish plans", "", "")
	if err := r.publishPlans(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	s.at("prune", "", "")
	if err := r.prune(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	r.digest(s)
	reportDistribution(s)
	if err := r.waitingBehind(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if d := r.distributionRequeue(s); d > 0 {
		return ctrl.Result{RequeueAfter: d}, nil
	}
	for _, d := range s.sum.services {
		// A window opening changes nothing in ZooKeeper until a node decides: look again then,
		// so that status stops saying the window is closed.
		if !d.GateOpens.IsZero() {
			if until := time.Until(d.GateOpens) + time.Second; until < r.resync() {
				return ctrl.Result{RequeueAfter: max(until, time.Second)}, nil
			}
		}
	}
	for _, d := range s.sum.services {
		// Download progress changes the data of progress znodes, and a first waiter's hold (its
		// preStopCheck or the alert gate said not now) the data of its staging child, which
		// child watches do not see: refresh the status a few times a minute while nodes
		// download, or wait staged with none upgrading.
		held := d.Status.Phase == v1alpha1.PhaseProgressing && d.Status.Staged > 0 && d.Status.Upgrading == 0
		if d.Status.Downloading > 0 || held {
			return ctrl.Result{RequeueAfter: min(r.resync(), progressRefresh)}, nil
		}
	}
	for _, d := range s.sum.services {
		if !d.Complete {
			return ctrl.Result{RequeueAfter: r.resync()}, nil
		}
	}
	return ctrl.Result{}, nil
}

// progressRefresh is how often status follows downloads under way.
const progressRefresh = 5 * time.Second

// validate checks the spec (plan.Validate) and sets the deploy order.
func (r *RollingDeployReconciler) validate(ctx context.Context, s *scope) bool {
	if err := plan.Validate(s.rd.Spec); err != nil {
		logf.FromContext(ctx).Info("invalid spec; nothing is written to ZooKeeper", "problem", err.Error())
		s.sum = summary{outcome: outcomeInvalid, reason: v1alpha1.ReasonInvalidSpec,
			message: err.Error() + "; nothing was written to ZooKeeper"}
		return true
	}
	order, _ := plan.TopoOrder(s.rd.Spec.Services) // Validate already rejected cycles
	s.order = order
	s.specs = map[string]v1alpha1.ServiceSpec{}
	for _, svc := range s.rd.Spec.Services {
		s.specs[svc.Name] = svc
	}
	return false
}

// resolveNodes matches each service's nodeSelector against the Nodes and resolves its quorum.
func (r *RollingDeployReconciler) resolveNodes(ctx context.Context, s *scope) (bool, error) {
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := r.List(ctx, nodes); err != nil {
		return false, fmt.Errorf("list nodes: %w", err)
	}
	s.selected = map[string][]string{}
	s.minAvailable = map[string]int{}
	s.minStaged = map[string]*int{}
	s.gates = map[string]plan.Gates{}
	var problems []string
	for _, name := range s.order {
		spec := s.specs[name]
		sel := labels.Everything()
		if spec.NodeSelector != nil {
			var err error
			if sel, err = metav1.LabelSelectorAsSelector(spec.NodeSelector); err != nil {
				return false, fmt.Errorf("service %s nodeSelector: %w", name, err) // Validate checked it
			}
		}
		var picked []string
		var pickedLabels []map[string]string
		for _, n := range nodes.Items {
			if sel.Matches(labels.Set(n.Labels)) {
				picked = append(picked, n.Name)
				pickedLabels = append(pickedLabels, n.Labels)
			}
		}
		g, err := plan.ResolveGates(plan.Strategy(s.rd.Spec, spec), pickedLabels)
		if err != nil {
			problems = append(problems, fmt.Sprintf("service %q strategy: %v", name, err))
		}
		g.Promoted = g.Canary > 0 && plan.Promoted(s.rd.Annotations, name, spec.Version)
		s.gates[name] = g
		sort.Strings(picked)
		s.selected[name] = picked
		quorum, err := plan.ResolveQuorum(spec.Quorum.MinAvailable, len(picked))
		if err != nil {
			selStr, _ := plan.SelectorString(spec.NodeSelector)
			if selStr == "" {
				selStr = "<every node>"
			}
			problems = append(problems, fmt.Sprintf("service %q (nodeSelector %s): %v", name, selStr, err))
		}
		s.minAvailable[name] = quorum
		if d := spec.Distribution; d != nil && d.MinStaged != nil {
			staged, err := plan.ResolveQuorum(*d.MinStaged, len(picked))
			if err != nil {
				problems = append(problems, fmt.Sprintf("service %q distribution.minStaged: %v", name, err))
			}
			s.minStaged[name] = &staged
		}
	}
	if len(problems) > 0 {
		s.sum = summary{outcome: outcomeInvalid, reason: v1alpha1.ReasonQuorumUnreachable,
			message: strings.Join(problems, "; ") + "; nothing was written to ZooKeeper"}
		return true, nil
	}
	return false, nil
}

// read makes sure the base znodes exist and reads every service's state and the deploy queue.
func (r *RollingDeployReconciler) read(ctx context.Context, s *scope) error {
	for _, p := range r.Layout.Bases() {
		if err := r.ZK.EnsurePath(ctx, p); err != nil {
			return fmt.Errorf("ensure %s: %w", p, err)
		}
	}
	s.state = map[string]*serviceState{}
	for _, name := range s.order {
		s.at("read", name, r.Layout.StagingService(name))
		st, err := r.readService(ctx, name)
		if err != nil {
			return fmt.Errorf("read service %s: %w", name, err)
		}
		s.state[name] = st
	}
	s.at("read", "", r.Layout.Deploy())
	q, bad, err := r.readDeployQueue(ctx)
	if err != nil {
		return fmt.Errorf("read deploy queue: %w", err)
	}
	s.queue, s.queueMalformed = q, bad
	return nil
}

// A plan that cannot be read has no owner anybody can tell: claim treats it as missing (the
// earliest RollingDeploy naming the service gets it) and repairPlans rewrites it.

// claimant describes a RollingDeploy for plan.Claim.
func claimant(rd *v1alpha1.RollingDeploy) plan.Claimant {
	return plan.Claimant{Name: rd.Name, UID: string(rd.UID), Created: rd.CreationTimestamp.Time}
}

// claim makes sure no other RollingDeploy owns one of the services; if one does, this one waits.
func (r *RollingDeployReconciler) claim(ctx context.Context, s *scope) (bool, error) {
	all := &v1alpha1.RollingDeployList{}
	if err := r.List(ctx, all); err != nil {
		return false, fmt.Errorf("list RollingDeploys: %w", err)
	}
	self := claimant(s.rd)
	var waits []string
	for _, name := range s.order {
		st := s.state[name]
		var holder *plan.Claimant
		holderDone := false
		var rivals []plan.Claimant
		for i := range all.Items {
			o := &all.Items[i]
			if o.UID == s.rd.UID {
				continue
			}
			if st.plan != nil && string(o.UID) == st.plan.DeployUID {
				c := claimant(o)
				holder = &c
				holderDone = st.obs.Complete(st.plan.Version, st.plan.MinAvailable, len(s.selected[name]))
				continue
			}
			if !o.DeletionTimestamp.IsZero() || o.Status.Phase == v1alpha1.PhaseInvalid {
				continue
			}
			if _, ok := plan.ServiceByName(o.Spec, name); ok {
				rivals = append(rivals, claimant(o))
			}
		}
		if st.plan != nil && st.plan.DeployUID == string(s.rd.UID) {
			holder = &self
		}
		if d := plan.Claim(name, self, holder, holderDone, rivals); !d.Granted {
			waits = append(waits, d.Message)
		}
	}
	if len(waits) == 0 {
		return false, nil
	}
	s.sum = summary{outcome: outcomeWaiting, message: strings.Join(waits, "; ")}
	return true, nil
}

// publishReleases writes the release of every service's version.
func (r *RollingDeployReconciler) publishReleases(ctx context.Context, s *scope) (bool, error) {
	now := time.Now()
	var conflicts []string
	for _, name := range s.order {
		c, err := r.ensureRelease(ctx, s.specs[name], now)
		if err != nil {
			return false, fmt.Errorf("publish release of %s: %w", name, err)
		}
		if c != "" {
			conflicts = append(conflicts, c)
		}
	}
	if len(conflicts) == 0 {
		return false, nil
	}
	reason := ReasonReleaseConflict
	for _, c := range conflicts {
		if strings.Contains(c, zklayout.ErrMalformed.Error()) {
			reason = ReasonMalformedZnode
		}
	}
	s.sum = summary{outcome: outcomeStalled, reason: reason, message: strings.Join(conflicts, "; ")}
	return true, nil
}

// publishPlans writes every service's plan. A plan that changes version waits until every
// new version of the pass has its torrent (distributionGate): a plan never names a version
// nodes cannot fetch. When a plan's version changes, the service's old failures go and this
// RollingDeploy's deploy entries are recreated in deploy order first; the plans are written
// last, in one transaction, so a pass that dies half-way is redone in full.
func (r *RollingDeployReconciler) publishPlans(ctx context.Context, s *scope) error {
	rd := s.rd
	now := time.Now()
	owner := plan.Owner{Name: rd.Name, UID: string(rd.UID), Generation: rd.Generation}
	opts := plan.Options{Paused: paused(rd), FailurePolicy: rd.Spec.FailurePolicy}
	var ops, newOps []zkclient.Op
	var newVersion, updated []zklayout.Plan
	for _, name := range s.order {
		st, spec := s.state[name], s.specs[name]
		prev := plan.PreviousVersion(st.plan, spec.Version, st.obs.Current)
		want, err := plan.Plan(owner, spec, opts, s.minAvailable[name], s.minStaged[name], s.gates[name], prev, now)
		if err != nil {
			return err
		}
		if st.plan != nil && plan.SamePlan(*st.plan, want) {
			continue
		}
		data, err := r.Signer.Encode(r.Layout.StagingService(name), &want)
		if err != nil {
			return fmt.Errorf("encode plan of %s: %w", name, err)
		}
		op := zkclient.CreateOp(r.Layout.StagingService(name), data, zkclient.Persistent)
		if st.planExists {
			op = zkclient.SetOp(r.Layout.StagingService(name), data, st.planVersion)
		}
		if st.plan == nil || st.plan.Version != want.Version {
			newVersion = append(newVersion, want)
			newOps = append(newOps, op)
		} else {
			updated = append(updated, want)
			ops = append(ops, op)
		}
	}
	var versions []string
	if len(newVersion) > 0 {
		if r.distributionGate(s, newVersion) {
			ops = append(ops, newOps...)
			for _, p := range newVersion {
				versions = append(versions, p.Version)
			}
			r.reach(s, StepAfterTorrent, versions...)
		} else {
			// All or none: a service's plan must not move ahead of the plans it depends on.
			newVersion = nil
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if len(newVersion) > 0 {
		for _, p := range newVersion {
			if err := r.clearFailures(ctx, p.Service); err != nil {
				return err
			}
			s.state[p.Service].obs.Failures = nil
		}
		if _, err := r.deleteEntries(ctx, s.queue, rd.Name, func(zklayout.DeployEntry) bool { return true }); err != nil {
			return err
		}
		s.queue = nil
		for _, name := range s.order {
			if s.complete(name) {
				continue
			}
			spec := s.specs[name]
			if err := r.createEntry(ctx, rd, spec, false); err != nil {
				return err
			}
		}
	}
	// The commit point: agents act on plans only.
	if err := r.ZK.Multi(ctx, ops...); err != nil {
		return fmt.Errorf("write plans: %w", err)
	}
	if len(versions) > 0 {
		r.reach(s, StepAfterPlan, versions...)
	}
	log := logf.FromContext(ctx)
	for _, p := range newVersion {
		log.Info("plan published", "service", p.Service, "version", p.Version, "previousVersion", p.PreviousVersion, "minAvailable", p.MinAvailable)
		r.event(rd, corev1.EventTypeNormal, EventPlanPublished, "published %s %s (previous %s, minAvailable %d, selector %q)",
			p.Service, p.Version, orNone(p.PreviousVersion), p.MinAvailable, p.Selector)
	}
	for _, p := range updated {
		if old := s.state[p.Service].plan; p.Promoted && old != nil && !old.Promoted {
			r.event(rd, corev1.EventTypeNormal, EventPromoted, "%s %s promoted past its canary phase (%d node(s))", p.Service, p.Version, p.Canary)
		}
		log.Info("plan updated", "service", p.Service, "version", p.Version, "paused", p.Paused, "failurePolicy", p.FailurePolicy, "minAvailable", p.MinAvailable)
		r.event(rd, corev1.EventTypeNormal, EventPlanUpdated, "updated plan of %s %s (paused %t, failurePolicy %s, minAvailable %d)",
			p.Service, p.Version, p.Paused, p.FailurePolicy, p.MinAvailable)
	}
	if len(newVersion) > 0 {
		// Re-read the queue so prune sees the entries just made.
		q, bad, err := r.readDeployQueue(ctx)
		if err != nil {
			return fmt.Errorf("read deploy queue: %w", err)
		}
		s.queue, s.queueMalformed = q, bad
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// dropOrphanEntries deletes the deploy entries of RollingDeploys that no longer exist, and
// takes them out of s.queue. Deleting a RollingDeploy removes its entries (the finalizer), but
// one whose finalizer was stripped by hand leaves them behind; at the head of the queue such an
// entry would hold every other service back for good. The API server itself, not the cache,
// confirms that the owner is gone: entries are only ever made by their owner's own pass, so an
// owner the cache has not seen yet cannot have entries.
func (r *RollingDeployReconciler) dropOrphanEntries(ctx context.Context, s *scope) error {
	gone := map[string]bool{s.rd.Name: false}
	kept := s.queue[:0:0]
	for _, e := range s.queue {
		name := e.entry.Deploy
		g, known := gone[name]
		if !known {
			var err error
			if g, err = r.ownerGone(ctx, name); err != nil {
				return fmt.Errorf("check owner %s of deploy entry %s: %w", name, e.child, err)
			}
			gone[name] = g
		}
		if !g {
			kept = append(kept, e)
			continue
		}
		if err := r.ZK.Delete(ctx, r.Layout.DeployEntry(e.child), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			return fmt.Errorf("delete orphaned deploy entry %s: %w", e.child, err)
		}
		logf.FromContext(ctx).Info("deleted a deploy entry whose RollingDeploy no longer exists",
			"entry", r.Layout.DeployEntry(e.child), "owner", name, "service", e.entry.Service, "version", e.entry.Version)
		r.event(s.rd, corev1.EventTypeNormal, EventOrphanEntryDeleted,
			"deleted deploy entry %s (%s %s) of RollingDeploy %s, which no longer exists", e.child, e.entry.Service, e.entry.Version, name)
	}
	s.queue = kept
	return nil
}

// ownerGone tells whether RollingDeploy name no longer exists. The cache answers for owners
// that exist (no API call on every pass); one it lacks is confirmed on the API server itself.
func (r *RollingDeployReconciler) ownerGone(ctx context.Context, name string) (bool, error) {
	readers := []client.Reader{r.Client}
	if r.APIReader != nil {
		readers = append(readers, r.APIReader)
	}
	for _, reader := range readers {
		if err := reader.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.RollingDeploy{}); !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	return true, nil
}

// complete tells whether service name's rollout to its target is done (rollout.Complete).
func (s *scope) complete(name string) bool {
	st := s.state[name]
	return st.obs.Complete(s.specs[name].Version, s.minAvailable[name], len(s.selected[name]))
}

// prune deletes this RollingDeploy's deploy entries that are done or stale, queues again the
// services that fell behind after their rollout was done, and gives up the services it held
// that are no longer in its spec.
func (r *RollingDeployReconciler) prune(ctx context.Context, s *scope) error {
	rd := s.rd
	kept, err := r.deleteEntries(ctx, s.queue, rd.Name, func(e zklayout.DeployEntry) bool {
		spec, ok := s.specs[e.Service]
		return !ok || e.Version != spec.Version || s.complete(e.Service)
	})
	if err != nil {
		return err
	}
	s.queue = kept
	if err := r.requeue(ctx, s); err != nil {
		return err
	}
	owned, err := r.ownedPlans(ctx, string(rd.UID))
	if err != nil {
		return fmt.Errorf("find plans of RollingDeploy %s: %w", rd.Name, err)
	}
	for svc, p := range owned {
		if _, ok := s.specs[svc]; ok {
			continue
		}
		if err := r.releaseService(ctx, svc, p); err != nil {
			return err
		}
		r.event(rd, corev1.EventTypeNormal, EventServiceReleased, "service %s left the spec: removed its plan, queue and failures", svc)
	}
	return nil
}

// requeue gives a deploy entry back to every service of this RollingDeploy that is not
// complete but has none. An entry goes once its service is complete, yet a node can fall behind
// afterwards: one cut off during the rollout whose agent reconnects (a new session) with the old
// version still running, or a node joining the selection with an older version. Without an
// entry such a node would wait for its turn forever; with one it upgrades like any other,
// through the quorum check. When every service it depends on is complete, the entry is a
// catch-up: its nodes need not wait for the services queued ahead (one halted by a failure
// would hold them forever) since the order it would wait for was honoured by the rollout.
func (r *RollingDeployReconciler) requeue(ctx context.Context, s *scope) error {
	queued := map[string]bool{}
	for _, e := range s.queue {
		if e.entry.Deploy == s.rd.Name && e.entry.Version == s.specs[e.entry.Service].Version {
			queued[e.entry.Service] = true
		}
	}
	for _, name := range s.order {
		if queued[name] || s.complete(name) {
			continue
		}
		spec := s.specs[name]
		var nodes []string
		for _, c := range s.state[name].obs.Current {
			if c.Version != spec.Version {
				nodes = append(nodes, c.Node)
			}
		}
		if len(nodes) == 0 {
			// Incomplete for another reason (an unreadable registration): status reports it;
			// holding the queue for it would stall the other services.
			continue
		}
		sort.Strings(nodes)
		catchUp := true
		for _, dep := range spec.DependsOn {
			if !s.complete(dep) {
				catchUp = false
			}
		}
		if err := r.createEntry(ctx, s.rd, spec, catchUp); err != nil {
			return err
		}
		how := "queued again behind the services ahead (a dependency is not complete)"
		if catchUp {
			how = "queued again to catch up (its dependencies are complete; it does not wait for the services ahead)"
		}
		logf.FromContext(ctx).Info("service fell behind after its rollout; "+how, "service", name, "version", spec.Version, "nodes", nodes)
		r.event(s.rd, corev1.EventTypeNormal, EventRequeued, "%s: node(s) %s not on %s after the rollout was done; %s",
			name, strings.Join(nodes, ", "), spec.Version, how)
	}
	return nil
}

// digest turns what was read into per-service statuses, in deploy order.
func (r *RollingDeployReconciler) digest(s *scope) {
	var ds []plan.Digest
	var incomplete []string
	blocked, queueDegraded := queueBlock(r.Layout, s.rd.Name, s.queue, s.queueMalformed)
	for i, name := range s.order {
		s.at("digest", name, "")
		spec, st := s.specs[name], s.state[name]
		o := st.obs
		o.Service, o.Target, o.Artifact = name, spec.Version, spec.Artifact
		o.MinAvailable, o.Selected, o.MinStaged = s.minAvailable[name], s.selected[name], s.minStaged[name]
		o.Plan, o.Now = st.plan, time.Now()
		d := plan.DigestService(o)
		d.Status.Position = int32(i + 1)
		plan.Phase(&d, plan.PhaseInput{Paused: paused(s.rd), WaitingFor: append([]string(nil), incomplete...), BlockedBy: blocked[name]})
		if !d.Complete {
			incomplete = append(incomplete, name)
		}
		ds = append(ds, d)
	}
	s.sum.services = ds
	s.sum.paused = paused(s.rd)
	s.sum.rollback = s.rd.Spec.FailurePolicy == v1alpha1.FailurePolicyRollback
	s.sum.malformed = nil
	for _, m := range s.queueMalformed {
		s.sum.malformed = append(s.sum.malformed, m.problem)
	}
	s.sum.queueBlocked = queueDegraded
}

// seed asks the seeder to publish every service's target version, and to stop seeding the
// ones whose rollout is complete. A failure at the origin (unreachable, sha256 mismatch) is
// reported like a node's artifact failure, from the node "origin".
func (r *RollingDeployReconciler) seed(s *scope) {
	if r.Seeder == nil {
		return
	}
	s.dist, s.distWaits = map[string]seeder.State{}, map[string]string{}
	for _, name := range s.order {
		spec, st := s.specs[name], s.state[name]
		if s.complete(name) {
			r.Seeder.Stop(name, spec.Version)
			// Every node runs it already (a plan rewritten after a rollback, say): nothing to
			// distribute, nothing to wait for.
			s.dist[name] = seeder.State{Ready: true}
			continue
		}
		rel := plan.Release(spec, time.Time{})
		ds := r.Seeder.Ensure(&rel)
		s.dist[name] = ds
		// A transient failure (the origin unreachable) is retried by the seeder and reported
		// as the distribution the service waits for; a mismatch fails the version.
		if ds.Permanent {
			st.obs.Failures = append(st.obs.Failures, zklayout.Failure{Node: OriginNode, Version: spec.Version,
				Kind: zklayout.FailureArtifact, Reason: ds.Err.Error()})
		}
		if ds.Ready && st.plan != nil && st.plan.Version == spec.Version {
			r.reach(s, StepWhileSeeding, spec.Version)
		}
	}
}

// OriginNode names the seeder in failure reports.
const OriginNode = "origin"

// ServiceChanged enqueues the RollingDeploys naming svc (the seeder's OnChange).
func (r *RollingDeployReconciler) ServiceChanged(svc string) {
	if r.watcher != nil {
		r.watcher.Notify(svc)
	}
}

// reconcileDelete removes what the RollingDeploy owns in ZooKeeper (its plans and their queues,
// its failures and deploy entries; never current/), then the finalizer.
// forget drops what the operator keeps of a RollingDeploy that is gone: its ZooKeeper
// watches and its metric series.
func (r *RollingDeployReconciler) forget(name string) {
	r.watcher.Forget(name)
	deployMetrics.forget(name)
}

func (r *RollingDeployReconciler) reconcileDelete(ctx context.Context, rd *v1alpha1.RollingDeploy) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(rd, Finalizer) {
		r.forget(rd.Name)
		return ctrl.Result{}, nil
	}
	log := logf.FromContext(ctx)
	owned, err := r.ownedPlans(ctx, string(rd.UID))
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("clean up RollingDeploy %s: find its plans: %w", rd.Name, err)
	}
	svcs := make([]string, 0, len(owned))
	for svc := range owned {
		svcs = append(svcs, svc)
	}
	sort.Strings(svcs)
	for _, svc := range svcs {
		if err := r.releaseService(ctx, svc, owned[svc]); err != nil {
			return ctrl.Result{}, fmt.Errorf("clean up RollingDeploy %s: %w", rd.Name, err)
		}
	}
	queue, _, err := r.readDeployQueue(ctx)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("clean up RollingDeploy %s: read deploy queue: %w", rd.Name, err)
	}
	if _, err := r.deleteEntries(ctx, queue, rd.Name, func(zklayout.DeployEntry) bool { return true }); err != nil {
		return ctrl.Result{}, fmt.Errorf("clean up RollingDeploy %s: %w", rd.Name, err)
	}
	log.Info("removed the RollingDeploy's znodes", "services", svcs)
	base := rd.DeepCopy()
	controllerutil.RemoveFinalizer(rd, Finalizer)
	if err := r.Patch(ctx, rd, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("remove finalizer from RollingDeploy %s: %w", rd.Name, err)
	}
	r.forget(rd.Name)
	return ctrl.Result{}, nil
}

func (r *RollingDeployReconciler) event(rd *v1alpha1.RollingDeploy, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(rd, nil, typ, reason, "Rollout", format, args...)
	}
}

// SetupWithManager registers the controller and its ZooKeeper watcher with mgr.
func (r *RollingDeployReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.ZK == nil {
		return errors.New("RollingDeployReconciler needs a ZooKeeper client")
	}
	if r.Layout.Root() == "" {
		return errors.New("RollingDeployReconciler needs a ZooKeeper layout")
	}
	r.watcher = newZKWatcher(r.ZK, r.Layout, mgr.GetLogger().WithName("zkwatch"))
	r.cache = zkcache.New(r.ZK, 0)
	registerMetrics()
	zkMetrics.SetClient(r.ZK)
	if err := mgr.Add(r.watcher); err != nil {
		return fmt.Errorf("add ZooKeeper watcher: %w", err)
	}
	allDeploys := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return r.allRequests(ctx)
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("rollingdeploy").
		// Annotations too: rollkeeper.io/aborted.
		For(&v1alpha1.RollingDeploy{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		// A deleted RollingDeployNodeSet is written again.
		Owns(&v1alpha1.RollingDeployNodeSet{}, builder.WithPredicates(r.nodeSets.nodeSetDeleted())).
		// Another RollingDeploy's spec change or deletion can hand a service over.
		Watches(&v1alpha1.RollingDeploy{}, handler.EnqueueRequestsFromMapFunc(r.sharingServices),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Node labels and membership decide which nodes a service has.
		WatchesMetadata(&corev1.Node{}, allDeploys, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		WatchesRawSource(source.Channel(r.watcher.events, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// allRequests enqueues every RollingDeploy.
func (r *RollingDeployReconciler) allRequests(ctx context.Context) []reconcile.Request {
	all := &v1alpha1.RollingDeployList{}
	if err := r.List(ctx, all); err != nil {
		logf.FromContext(ctx).Error(err, "list RollingDeploys")
		return nil
	}
	out := make([]reconcile.Request, 0, len(all.Items))
	for _, rd := range all.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: rd.Name}})
	}
	return out
}

// sharingServices enqueues the other RollingDeploys that name one of obj's services.
func (r *RollingDeployReconciler) sharingServices(ctx context.Context, obj client.Object) []reconcile.Request {
	changed, ok := obj.(*v1alpha1.RollingDeploy)
	if !ok {
		return nil
	}
	all := &v1alpha1.RollingDeployList{}
	if err := r.List(ctx, all); err != nil {
		logf.FromContext(ctx).Error(err, "list RollingDeploys")
		return nil
	}
	var out []reconcile.Request
	for _, rd := range all.Items {
		if rd.Name == changed.Name {
			continue
		}
		for _, svc := range changed.Spec.Services {
			if _, ok := plan.ServiceByName(rd.Spec, svc.Name); ok {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: rd.Name}})
				break
			}
		}
	}
	return out
}
