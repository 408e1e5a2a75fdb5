package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/seeder"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Steps of publication, in order, as PublishHook names them. A plan is the commit point: it is
// written only once the version's release and torrent exist.
const (
	StepBeforeRelease = "before-release"
	StepAfterRelease  = "after-release"
	StepAfterTorrent  = "after-torrent"
	StepAfterPlan     = "after-plan"
	StepWhileSeeding  = "while-seeding"
)

// Steps lists the publication steps in order.
var Steps = []string{StepBeforeRelease, StepAfterRelease, StepAfterTorrent, StepAfterPlan, StepWhileSeeding}

const (
	// ReasonWaitingForDistribution: a new version's torrent is not published yet, so no plan
	// names it.
	ReasonWaitingForDistribution = "WaitingForDistribution"
	// ReasonOriginUnreachable: the operator cannot read a new version's artifact; it retries.
	ReasonOriginUnreachable = "OriginUnreachable"
	// ReasonWaitingBehindDeploy: another RollingDeploy's service heads the deploy queue.
	ReasonWaitingBehindDeploy = "WaitingBehindDeploy"
	// EventWaitingBehind: the deploy started (or changed) waiting behind another deploy's entry.
	EventWaitingBehind = "WaitingBehind"
)

// reach calls the publish hook for step with every target version of the pass.
func (r *RollingDeployReconciler) reach(s *scope, step string, versions ...string) {
	if r.PublishHook == nil {
		return
	}
	if versions == nil {
		for _, name := range s.order {
			versions = append(versions, s.specs[name].Version)
		}
	}
	for _, v := range versions {
		r.PublishHook(step, v)
	}
}

// distributionGate tells whether the plans that change version may be written: with a seeder,
// only once every such version's torrent is published and seeded. Otherwise it records why the
// services wait in s.distWaits (their status says so) and the plans are not written: a plan must
// never name a version nodes cannot fetch yet.
func (r *RollingDeployReconciler) distributionGate(s *scope, newVersion []zklayout.Plan) bool {
	if r.Seeder == nil {
		return true
	}
	open := true
	for _, p := range newVersion {
		if st := s.dist[p.Service]; !st.Ready {
			open = false
			s.distWaits[p.Service] = distributionMessage(s.specs[p.Service], st)
		}
	}
	return open
}

// distributionMessage says why a service's new version is not planned yet.
func distributionMessage(spec v1alpha1.ServiceSpec, st seeder.State) string {
	msg := fmt.Sprintf("waiting for its distribution: the operator reads %s and publishes its torrent before any node is told about %s",
		spec.Artifact.URL, spec.Version)
	switch {
	case st.Err == nil || errors.Is(st.Err, seeder.ErrNotStarted):
	case st.Permanent && (errors.Is(st.Err, seeder.ErrTooLarge) || errors.Is(st.Err, seeder.ErrOriginRefused)):
		msg += fmt.Sprintf("; %v", st.Err) // says what to do
	case st.Permanent:
		msg += fmt.Sprintf("; %v: fix the artifact of %s and give it a new version", st.Err, spec.Name)
	case errors.Is(st.Err, seeder.ErrOverBudget):
		// Not the origin's fault: the versions being seeded fill the budget; one finishing
		// frees room, and the seeder retries by itself.
		msg += fmt.Sprintf("; waiting for room in the seeder's directory (attempt %d): %v", st.Attempts, st.Err)
	default:
		next := ""
		if !st.NextAttempt.IsZero() {
			next = fmt.Sprintf(", next in %s", time.Until(st.NextAttempt).Round(time.Second))
		}
		msg += fmt.Sprintf("; the origin cannot be read (attempt %d%s): %v; check the URL is reachable from the operator, which retries by itself",
			st.Attempts, next, st.Err)
	}
	return msg
}

// reportDistribution marks the services whose new version waits for its torrent (Pending, with
// the reason) and collects what status says about them.
func reportDistribution(s *scope) {
	if len(s.distWaits) == 0 {
		return
	}
	for i := range s.sum.services {
		d := &s.sum.services[i]
		msg, ok := s.distWaits[d.Status.Name]
		if !ok || d.Complete || d.Status.Phase == v1alpha1.PhaseFailed {
			continue
		}
		d.Status.Phase = v1alpha1.PhasePending
		d.Status.Message = msg
		s.sum.distribution = append(s.sum.distribution, d.Status.Name+": "+msg)
		if st := s.dist[d.Status.Name]; st.Err != nil && !st.Permanent && !errors.Is(st.Err, seeder.ErrNotStarted) && !errors.Is(st.Err, seeder.ErrOverBudget) {
			s.sum.originUnreachable = append(s.sum.originUnreachable, d.Status.Name+": "+msg)
		}
	}
}

// distributionRequeue is how soon to look again while a version waits for its torrent: the
// seeder's OnChange wakes the pass when the torrent is ready; this covers a seeder that is not
// started yet (a new leader).
func (r *RollingDeployReconciler) distributionRequeue(s *scope) time.Duration {
	if len(s.distWaits) == 0 {
		return 0
	}
	for name := range s.distWaits {
		if errors.Is(s.dist[name].Err, seeder.ErrNotStarted) {
			return 2 * time.Second
		}
	}
	return r.resync()
}

// waitingBehind explains, when one of the deploy's services has a queue entry behind another
// RollingDeploy's entry at the head of the deploy queue, what holds it: the blocking service,
// its RollingDeploy and its state (failed, paused, upgrading), read from ZooKeeper. Independent
// RollingDeploys share the queue on purpose (docs/design.md, "The deploy queue"): one service
// upgrades at a time in the whole cluster, so a broken release stops the line instead of
// spreading to other services on the same nodes. The status and an event must say so.
func (r *RollingDeployReconciler) waitingBehind(ctx context.Context, s *scope) error {
	if len(s.queue) == 0 {
		return nil
	}
	head := s.queue[0].entry
	if head.Deploy == s.rd.Name {
		return nil
	}
	queued := false
	for _, e := range s.queue {
		if e.entry.Deploy == s.rd.Name {
			queued = true
			break
		}
	}
	if !queued {
		return nil
	}
	st, err := r.readService(ctx, head.Service)
	if err != nil {
		return fmt.Errorf("read service %s heading the deploy queue: %w", head.Service, err)
	}
	state, detail := blockerState(head, st)
	header := fmt.Sprintf("waiting behind %s %s of RollingDeploy %s (%s)", head.Service, head.Version, head.Deploy, state)
	s.sum.waitingBehind = header + ": " + detail +
		"; the deploy queue upgrades one service at a time across every RollingDeploy: fix, abort or delete the blocking one to go on"
	prev := meta.FindStatusCondition(s.rd.Status.Conditions, v1alpha1.ConditionProgressing)
	if prev == nil || !strings.HasPrefix(prev.Message, header) {
		typ := corev1.EventTypeNormal
		if strings.HasPrefix(state, "Failed") {
			typ = corev1.EventTypeWarning
		}
		r.event(s.rd, typ, EventWaitingBehind, "%s", s.sum.waitingBehind)
	}
	return nil
}

// blockerState sums up the head service: a short state (stable while it lasts, for the event)
// and details.
func blockerState(head zklayout.DeployEntry, st *serviceState) (state, detail string) {
	var failed []zklayout.Failure
	for _, f := range st.obs.Failures {
		if f.Version == head.Version {
			failed = append(failed, f)
		}
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].Node < failed[j].Node })
	updated := 0
	for _, c := range st.obs.Current {
		if c.Version == head.Version {
			updated++
		}
	}
	counts := fmt.Sprintf("%d of %d online node(s) on %s", updated, len(st.obs.Current)+len(st.obs.CurrentUnreadable), head.Version)
	switch {
	case len(failed) > 0:
		nodes := make([]string, 0, len(failed))
		for i, f := range failed {
			if i == plan.MaxListedNodes {
				nodes = append(nodes, fmt.Sprintf("and %d more", len(failed)-i))
				break
			}
			nodes = append(nodes, f.Node)
		}
		return fmt.Sprintf("Failed %s on %s", failed[0].Kind, strings.Join(nodes, ", ")), failed[0].Reason + "; " + counts
	case st.plan == nil:
		return "no plan", "its plan staging/" + head.Service + " is missing or unreadable"
	case st.plan.Version != head.Version:
		return "superseded", fmt.Sprintf("its plan now names %s; the entry goes once its owner's next pass runs", st.plan.Version)
	case st.plan.Paused:
		return "paused", counts
	default:
		return "upgrading", counts
	}
}
