package controllers

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
)

// Reasons and event reasons the controller adds to those of the API package.
const (
	// ReasonMalformedZnode: a znode holds a payload that does not decode; it is reported and
	// never acted on.
	ReasonMalformedZnode = "MalformedZnode"
	// ReasonReleaseConflict: releases/<svc>/<version> exists with another artifact.
	ReasonReleaseConflict = "ReleaseConflict"
	// ReasonAgentError: an agent's step panicked (failures/ kind AgentError); reported only.
	ReasonAgentError = "AgentError"
	// ReasonSignatureRefused: an agent refused an unsigned or wrongly signed plan, release or
	// deploy entry (failures/ kind Signature); reported only.
	ReasonSignatureRefused = "SignatureRefused"

	EventPlanPublished   = "PlanPublished"
	EventPlanUpdated     = "PlanUpdated"
	EventPromoted        = "Promoted"
	EventServiceComplete = "ServiceComplete"
	EventWaiting         = "Waiting"
	EventResumed         = "Resumed"
	EventServiceReleased = "ServiceReleased"
	// EventOrphanEntryDeleted: a deploy entry of a RollingDeploy that no longer exists (its
	// finalizer was removed by hand) was deleted so it cannot hold the queue.
	EventOrphanEntryDeleted = "OrphanEntryDeleted"
	// EventRequeued: a service whose rollout was done fell behind (a node came back on an older
	// version) and got a deploy entry again.
	EventRequeued = "Requeued"
)

// outcome is how a pass ended, before it is written into status.
type outcome int

const (
	// outcomeRolling: the plans are published; the service digests say how far the rollout is.
	outcomeRolling outcome = iota
	// outcomeInvalid: the spec cannot be rolled out (InvalidSpec, QuorumUnreachable); nothing
	// was written to ZooKeeper.
	outcomeInvalid
	// outcomeStalled: a znode blocks publishing (a malformed plan or release, or a release
	// conflict); nothing more was written.
	outcomeStalled
	// outcomeWaiting: another RollingDeploy owns one of the services; nothing was written.
	outcomeWaiting
	// outcomeZooKeeper: ZooKeeper could not be reached; the rest of status is kept.
	outcomeZooKeeper
)

// summary is everything status is computed from.
type summary struct {
	outcome outcome
	// reason and message explain outcomeInvalid, outcomeStalled, outcomeWaiting and outcomeZooKeeper.
	reason  string
	message string
	// services are the digests in deploy order (with phases set), when known.
	services []plan.Digest
	paused   bool
	rollback bool
	// malformed describes znodes outside a single service (deploy queue) that do not decode.
	malformed []string
	// queueBlocked, when set, says which unreadable deploy entry heads the queue (and so holds
	// every deploy behind it).
	queueBlocked string
	// distribution says which services' new versions wait for their torrent, and
	// originUnreachable which of them because the origin cannot be read (distributionGate).
	distribution, originUnreachable []string
	// waitingBehind, when set, says which other RollingDeploy's service heads the deploy
	// queue and holds this one's (waitingBehind).
	waitingBehind string
}

// setCondition sets one condition at the object's generation.
func setCondition(st *v1alpha1.RollingDeployStatus, gen int64, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: truncate(msg, 32768), ObservedGeneration: gen,
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// applySummary writes phase, progress, services and conditions. It is a pure function of its
// inputs (and the conditions already present, for transition times).
func applySummary(st *v1alpha1.RollingDeployStatus, gen int64, sum summary) {
	const (
		T = metav1.ConditionTrue
		F = metav1.ConditionFalse
	)
	set := func(typ string, s metav1.ConditionStatus, reason, msg string) {
		setCondition(st, gen, typ, s, reason, msg)
	}

	switch sum.outcome {
	case outcomeZooKeeper:
		// Keep what was last known; say why it may be stale.
		if st.Phase == "" {
			st.Phase = v1alpha1.PhasePending
		}
		set(v1alpha1.ConditionReady, F, sum.reason, sum.message)
		set(v1alpha1.ConditionReconciling, T, sum.reason, sum.message)
		return
	case outcomeInvalid:
		st.Phase = v1alpha1.PhaseInvalid
		st.Services = nil
		st.Progress = ""
		set(v1alpha1.ConditionReady, F, sum.reason, sum.message)
		set(v1alpha1.ConditionStalled, T, sum.reason, sum.message)
		set(v1alpha1.ConditionReconciling, F, sum.reason, "nothing is rolled out until the spec is fixed")
		set(v1alpha1.ConditionProgressing, F, sum.reason, "nothing is rolled out until the spec is fixed")
		set(v1alpha1.ConditionDegraded, F, v1alpha1.ReasonAsExpected, "")
		return
	}

	st.Services = make([]v1alpha1.ServiceStatus, 0, len(sum.services))
	var updated, total int32
	for _, d := range sum.services {
		st.Services = append(st.Services, d.Status)
		updated += d.Status.Updated
		total += d.Status.Total
	}
	st.Progress = fmt.Sprintf("%d/%d", updated, total)

	switch sum.outcome {
	case outcomeStalled:
		st.Phase = v1alpha1.PhaseFailed
		set(v1alpha1.ConditionReady, F, sum.reason, sum.message)
		set(v1alpha1.ConditionStalled, T, sum.reason, sum.message)
		set(v1alpha1.ConditionReconciling, F, sum.reason, "publishing is blocked: "+sum.message)
		set(v1alpha1.ConditionProgressing, F, sum.reason, "publishing is blocked")
		set(v1alpha1.ConditionDegraded, T, sum.reason, sum.message)
		return
	case outcomeWaiting:
		st.Phase = v1alpha1.PhaseWaiting
		set(v1alpha1.ConditionReady, F, v1alpha1.ReasonServiceConflict, sum.message)
		set(v1alpha1.ConditionReconciling, T, v1alpha1.ReasonServiceConflict, sum.message)
		set(v1alpha1.ConditionStalled, F, v1alpha1.ReasonServiceConflict, "")
		set(v1alpha1.ConditionProgressing, F, v1alpha1.ReasonServiceConflict, sum.message)
		set(v1alpha1.ConditionDegraded, F, v1alpha1.ReasonAsExpected, "")
		return
	}

	var health, halted, artifact, agent, signature, progress, malformed []string
	complete := true
	for _, d := range sum.services {
		complete = complete && d.Complete
		if m := plan.HealthFailureMessage(d.Status.Name, d.HealthFailures); m != "" {
			health = append(health, m)
			if len(d.HealthFailures) > d.MaxFailures {
				// Beyond what strategy.maxFailures tolerates: the service's rollout halted.
				halted = append(halted, m)
			}
		}
		if m := plan.ArtifactFailureMessage(d.Status.Name, d.Artifact, d.ArtifactFailures); m != "" {
			artifact = append(artifact, m)
		}
		if m := plan.AgentFailureMessage(d.Status.Name, d.AgentFailures); m != "" {
			agent = append(agent, m)
		}
		if m := plan.SignatureFailureMessage(d.Status.Name, d.SignatureFailures); m != "" {
			signature = append(signature, m)
		}
		if !d.Complete {
			progress = append(progress, fmt.Sprintf("%s: %s", d.Status.Name, d.Status.Message))
		}
	}
	for _, d := range sum.services {
		malformed = append(malformed, d.Malformed...)
	}
	malformed = append(malformed, sum.malformed...)

	// Degraded: failures first (a refused signature may be an attack: before the lesser ones),
	// then unreadable znodes.
	switch {
	case len(health) > 0:
		set(v1alpha1.ConditionDegraded, T, v1alpha1.ReasonHealthCheckFailed, strings.Join(append(health, artifact...), "; "))
	case len(signature) > 0:
		set(v1alpha1.ConditionDegraded, T, ReasonSignatureRefused, strings.Join(signature, "; "))
	case len(artifact) > 0:
		set(v1alpha1.ConditionDegraded, T, v1alpha1.ReasonArtifactFailed, strings.Join(append(artifact, agent...), "; "))
	case len(agent) > 0:
		set(v1alpha1.ConditionDegraded, T, ReasonAgentError, strings.Join(agent, "; "))
	case sum.queueBlocked != "":
		set(v1alpha1.ConditionDegraded, T, ReasonMalformedZnode, strings.Join(append([]string{sum.queueBlocked}, malformed...), "; "))
	case len(sum.originUnreachable) > 0:
		set(v1alpha1.ConditionDegraded, T, ReasonOriginUnreachable, strings.Join(sum.originUnreachable, "; "))
	case len(malformed) > 0:
		set(v1alpha1.ConditionDegraded, T, ReasonMalformedZnode, "ignored unreadable znodes: "+strings.Join(malformed, "; "))
	default:
		set(v1alpha1.ConditionDegraded, F, v1alpha1.ReasonAsExpected, "")
	}

	switch {
	case complete:
		st.Phase = v1alpha1.PhaseComplete
		var names []string
		for _, d := range sum.services {
			names = append(names, d.Status.Name+" "+d.Status.TargetVersion)
		}
		msg := "every online node runs its target version: " + strings.Join(names, ", ")
		set(v1alpha1.ConditionReady, T, v1alpha1.ReasonComplete, msg)
		set(v1alpha1.ConditionReconciling, F, v1alpha1.ReasonComplete, "")
		set(v1alpha1.ConditionStalled, F, v1alpha1.ReasonComplete, "")
		set(v1alpha1.ConditionProgressing, F, v1alpha1.ReasonComplete, msg)
	case len(halted) > 0:
		st.Phase = v1alpha1.PhaseFailed
		msg := strings.Join(halted, "; ")
		if sum.rollback {
			msg += "; failurePolicy Rollback: the upgraded nodes roll back to the previous version"
		} else {
			msg += "; fix the version and apply a new one, or set failurePolicy Rollback"
		}
		set(v1alpha1.ConditionReady, F, v1alpha1.ReasonHealthCheckFailed, msg)
		set(v1alpha1.ConditionStalled, T, v1alpha1.ReasonHealthCheckFailed, msg)
		if sum.rollback {
			set(v1alpha1.ConditionReconciling, T, v1alpha1.ReasonRollingBack, msg)
			set(v1alpha1.ConditionProgressing, T, v1alpha1.ReasonRollingBack, msg)
		} else {
			set(v1alpha1.ConditionReconciling, F, v1alpha1.ReasonHealthCheckFailed, msg)
			set(v1alpha1.ConditionProgressing, F, v1alpha1.ReasonHealthCheckFailed, msg)
		}
	case sum.paused:
		st.Phase = v1alpha1.PhasePaused
		msg := "paused by spec.paused; " + strings.Join(progress, "; ")
		set(v1alpha1.ConditionReady, F, v1alpha1.ReasonPaused, msg)
		set(v1alpha1.ConditionReconciling, F, v1alpha1.ReasonPaused, msg)
		set(v1alpha1.ConditionStalled, F, v1alpha1.ReasonPaused, "")
		set(v1alpha1.ConditionProgressing, F, v1alpha1.ReasonPaused, msg)
	case len(artifact) > 0:
		st.Phase = v1alpha1.PhaseFailed
		msg := strings.Join(artifact, "; ")
		set(v1alpha1.ConditionReady, F, v1alpha1.ReasonArtifactFailed, msg)
		set(v1alpha1.ConditionReconciling, T, v1alpha1.ReasonArtifactFailed, msg)
		set(v1alpha1.ConditionStalled, F, v1alpha1.ReasonArtifactFailed, "")
		set(v1alpha1.ConditionProgressing, T, v1alpha1.ReasonProgressing, strings.Join(progress, "; "))
	case sum.waitingBehind != "" || len(sum.distribution) > 0:
		// Nothing of this RollingDeploy moves until the other deploy's service or the new
		// versions' torrents are done; say which first.
		st.Phase = v1alpha1.PhaseProgressing
		reason, msg := ReasonWaitingForDistribution, strings.Join(progress, "; ")
		if sum.waitingBehind != "" {
			reason, msg = ReasonWaitingBehindDeploy, sum.waitingBehind+"; "+msg
		}
		set(v1alpha1.ConditionReady, F, reason, msg)
		set(v1alpha1.ConditionReconciling, T, reason, msg)
		set(v1alpha1.ConditionStalled, F, v1alpha1.ReasonAsExpected, "")
		set(v1alpha1.ConditionProgressing, T, reason, msg)
	default:
		st.Phase = v1alpha1.PhaseProgressing
		msg := strings.Join(progress, "; ")
		set(v1alpha1.ConditionReady, F, v1alpha1.ReasonProgressing, msg)
		set(v1alpha1.ConditionReconciling, T, v1alpha1.ReasonProgressing, msg)
		set(v1alpha1.ConditionStalled, F, v1alpha1.ReasonAsExpected, "")
		set(v1alpha1.ConditionProgressing, T, v1alpha1.ReasonProgressing, msg)
	}
}

// emitTransitions records an event for every milestone between two statuses.
func emitTransitions(rec events.EventRecorder, rd *v1alpha1.RollingDeploy, prev, cur *v1alpha1.RollingDeployStatus) {
	if rec == nil {
		return
	}
	const action = "Rollout"
	changed := func(typ string) (*metav1.Condition, bool) {
		c := meta.FindStatusCondition(cur.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionTrue {
			return c, false
		}
		p := meta.FindStatusCondition(prev.Conditions, typ)
		return c, p == nil || p.Status != c.Status || p.Reason != c.Reason || p.Message != c.Message
	}

	if c, ok := changed(v1alpha1.ConditionDegraded); ok {
		rec.Eventf(rd, nil, corev1.EventTypeWarning, c.Reason, action, "%s", c.Message)
	}
	if c, ok := changed(v1alpha1.ConditionStalled); ok {
		if d := meta.FindStatusCondition(cur.Conditions, v1alpha1.ConditionDegraded); d == nil || d.Status != metav1.ConditionTrue || d.Reason != c.Reason {
			rec.Eventf(rd, nil, corev1.EventTypeWarning, c.Reason, action, "%s", c.Message)
		}
	}
	if r := meta.FindStatusCondition(cur.Conditions, v1alpha1.ConditionReady); r != nil {
		p := meta.FindStatusCondition(prev.Conditions, v1alpha1.ConditionReady)
		switch {
		case r.Status == metav1.ConditionTrue && (p == nil || p.Status != metav1.ConditionTrue):
			rec.Eventf(rd, nil, corev1.EventTypeNormal, v1alpha1.ReasonComplete, action, "%s", r.Message)
		case (r.Reason == v1alpha1.ReasonZooKeeperError || r.Reason == v1alpha1.ReasonZooKeeperInsecure) && (p == nil || p.Reason != r.Reason):
			rec.Eventf(rd, nil, corev1.EventTypeWarning, r.Reason, action, "%s", r.Message)
		}
	}
	if cur.Phase == v1alpha1.PhaseWaiting {
		c := meta.FindStatusCondition(cur.Conditions, v1alpha1.ConditionReconciling)
		p := meta.FindStatusCondition(prev.Conditions, v1alpha1.ConditionReconciling)
		if c != nil && (prev.Phase != v1alpha1.PhaseWaiting || p == nil || p.Message != c.Message) {
			rec.Eventf(rd, nil, corev1.EventTypeNormal, EventWaiting, action, "%s", c.Message)
		}
	}
	if cur.Phase == v1alpha1.PhasePaused && prev.Phase != v1alpha1.PhasePaused {
		rec.Eventf(rd, nil, corev1.EventTypeNormal, v1alpha1.ReasonPaused, action, "rollout paused")
	}
	if prev.Phase == v1alpha1.PhasePaused && cur.Phase != v1alpha1.PhasePaused && cur.Phase != v1alpha1.PhaseInvalid {
		rec.Eventf(rd, nil, corev1.EventTypeNormal, EventResumed, action, "rollout resumed")
	}
	before := map[string]v1alpha1.ServiceStatus{}
	for _, s := range prev.Services {
		before[s.Name] = s
	}
	for _, s := range cur.Services {
		if s.Phase != v1alpha1.PhaseComplete {
			continue
		}
		if b, ok := before[s.Name]; ok && b.Phase == v1alpha1.PhaseComplete && b.TargetVersion == s.TargetVersion {
			continue
		}
		rec.Eventf(rd, nil, corev1.EventTypeNormal, EventServiceComplete, action,
			"%s %s is complete: %d/%d node(s) updated", s.Name, s.TargetVersion, s.Updated, s.Total)
	}
}
