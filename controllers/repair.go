package controllers

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// The operator repairs what it owns in ZooKeeper instead of stalling on it: its plans, its
// deploy entries and its releases are rewritten or deleted when they do not decode, and
// children under current/<svc> and staging/<svc> that no agent can have made (persistent ones:
// agents only make ephemeral znodes there) are deleted. An ephemeral child that does not decode
// belongs to a live session, whose agent replaces it: it is only reported.
const (
	// EventZnodeRepaired: a plan or release that did not decode was rewritten, or a deploy entry
	// that did not decode was deleted.
	EventZnodeRepaired = "MalformedZnodeRepaired"
	// EventStrayZnodeDeleted: a persistent child of current/<svc> or staging/<svc> (never an
	// agent's) was deleted.
	EventStrayZnodeDeleted = "StrayZnodeDeleted"
	// EventPlanRepaired: a plan of this RollingDeploy had been changed by something other than
	// the operator and was rewritten.
	EventPlanRepaired = "PlanRepaired"
)

// repairEvent records a Warning event for a repair. The action tells the kinds of repair apart:
// events of one object with the same reason and action form one series (the first note stays,
// the count grows), so a plan rewrite never hides behind an entry deletion. The log names each.
func (r *RollingDeployReconciler) repairEvent(rd *v1alpha1.RollingDeploy, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(rd, nil, corev1.EventTypeWarning, reason, action, format, args...)
	}
}

// repair deletes the malformed deploy entries and the stray children of the services' queues
// and registrations (read phase).
func (r *RollingDeployReconciler) repair(ctx context.Context, s *scope) error {
	if err := r.repairQueue(ctx, s); err != nil {
		return err
	}
	return r.repairStrays(ctx, s)
}

// repairQueue deletes the deploy/ children that are no deploy entry. Only the operator writes
// deploy entries, whole, in one create: one that does not decode was written by hand (or by a
// newer schema) and at the head it would hold every deploy behind it. A child the operator may
// not delete (a foreign ACL) stays in s.queueMalformed and is reported.
func (r *RollingDeployReconciler) repairQueue(ctx context.Context, s *scope) error {
	log := logf.FromContext(ctx)
	var kept []malformedEntry
	for _, m := range s.queueMalformed {
		p := r.Layout.DeployEntry(m.child)
		s.at("repair deploy queue", "", p)
		err := r.ZK.Delete(ctx, p, -1)
		switch {
		case err == nil, errors.Is(err, zkclient.ErrNoNode):
			log.Info("deleted a malformed deploy entry", "znode", p, "problem", m.problem)
			r.repairEvent(s.rd, EventZnodeRepaired, "DeleteDeployEntry", "deleted malformed deploy entry %s: %s", p, m.problem)
		case errors.Is(err, zkclient.ErrNoAuth):
			m.problem = fmt.Sprintf("%s; the operator cannot delete it: %v", m.problem, err)
			kept = append(kept, m)
		default:
			return fmt.Errorf("delete malformed deploy entry %s: %w", p, err)
		}
	}
	s.queueMalformed = kept
	return nil
}

// repairStrays deletes the persistent children of current/<svc> and staging/<svc> of every
// service, then reads the services it changed again.
func (r *RollingDeployReconciler) repairStrays(ctx context.Context, s *scope) error {
	log := logf.FromContext(ctx)
	for _, name := range s.order {
		st := s.state[name]
		if len(st.strays) == 0 {
			continue
		}
		var kept []string
		for _, p := range st.strays {
			s.at("repair stray znodes", name, p)
			if err := r.ZK.Delete(ctx, p, -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
				if errors.Is(err, zkclient.ErrNoAuth) {
					kept = append(kept, fmt.Sprintf("znode %s is persistent, so no agent's, but the operator cannot delete it: %v", p, err))
					continue
				}
				return fmt.Errorf("delete stray znode %s: %w", p, err)
			}
			log.Info("deleted a persistent znode where agents make only ephemeral ones", "service", name, "znode", p)
			r.repairEvent(s.rd, EventStrayZnodeDeleted, "DeleteStrayZnode",
				"deleted %s: a persistent znode where agents make only ephemeral ones, so no live node's", p)
		}
		fresh, err := r.readService(ctx, name)
		if err != nil {
			return fmt.Errorf("read service %s: %w", name, err)
		}
		// What could not be deleted is reported, not deleted again in this pass.
		fresh.strays = nil
		fresh.obs.Malformed = append(fresh.obs.Malformed, kept...)
		s.state[name] = fresh
	}
	return nil
}

// repairReleases rewrites, for every service this RollingDeploy holds (the claim was granted),
// the release of its version when it does not decode (before publishReleases, which would
// otherwise report a conflict).
func (r *RollingDeployReconciler) repairReleases(ctx context.Context, s *scope) error {
	log := logf.FromContext(ctx)
	rd := s.rd
	now := time.Now()
	for _, name := range s.order {
		spec := s.specs[name]
		rp := r.Layout.Release(name, spec.Version)
		s.at("repair release", name, rp)
		var rel zklayout.Release
		found, stat, _, bad, err := r.readSigned(ctx, rp, rp, &rel)
		if err != nil {
			return fmt.Errorf("read release %s: %w", rp, err)
		}
		if found && bad != nil {
			fixed := plan.Release(spec, now)
			data, err := r.Signer.Encode(rp, &fixed)
			if err != nil {
				return fmt.Errorf("encode release %s: %w", rp, err)
			}
			if _, err := r.ZK.Set(ctx, rp, data, stat.Version); err != nil {
				return fmt.Errorf("rewrite malformed release %s: %w", rp, err)
			}
			log.Info("rewrote a malformed release", "service", name, "znode", rp, "problem", bad.Error())
			r.repairEvent(rd, EventZnodeRepaired, "RewriteRelease", "rewrote malformed release %s: %v", rp, bad)
		}
	}
	return nil
}

// repairPlans rewrites the plan of every service this RollingDeploy holds when it does not
// decode or was changed by someone else. It runs after the releases and the seeder, and like
// publishPlans it writes no plan whose version's torrent is not published yet (it waits for a
// later pass). A repaired plan keeps the service's failures and deploy entries: it restores
// what was there, so a rollout halted by a failed health check stays halted.
func (r *RollingDeployReconciler) repairPlans(ctx context.Context, s *scope) error {
	log := logf.FromContext(ctx)
	rd := s.rd
	now := time.Now()
	owner := plan.Owner{Name: rd.Name, UID: string(rd.UID), Generation: rd.Generation}
	opts := plan.Options{Paused: paused(rd), FailurePolicy: rd.Spec.FailurePolicy}
	for _, name := range s.order {
		st, spec := s.state[name], s.specs[name]
		pp := r.Layout.StagingService(name)
		s.at("repair plan", name, pp)
		want, err := plan.Plan(owner, spec, opts, s.minAvailable[name], s.minStaged[name], s.gates[name],
			plan.PreviousVersion(nil, spec.Version, st.obs.Current), now)
		if err != nil {
			return err
		}
		why := ""
		switch {
		case st.planMalformed != nil:
			why = st.planMalformed.Error()
		case st.plan != nil:
			why = tampered(rd, *st.plan, want)
		}
		if why == "" || r.Seeder != nil && !s.dist[name].Ready && !s.complete(name) {
			continue
		}
		if err := r.ensureEntry(ctx, s, name); err != nil {
			return err
		}
		data, err := r.Signer.Encode(pp, &want)
		if err != nil {
			return fmt.Errorf("encode plan of %s: %w", name, err)
		}
		stat, err := r.ZK.Set(ctx, pp, data, st.planVersion)
		if err != nil {
			return fmt.Errorf("rewrite plan %s: %w", pp, err)
		}
		reason, what := EventZnodeRepaired, "malformed"
		if st.planMalformed == nil {
			reason, what = EventPlanRepaired, "changed outside the operator"
		}
		log.Info("rewrote a plan", "service", name, "znode", pp, "problem", why, "version", want.Version)
		r.repairEvent(rd, reason, "RewritePlan", "rewrote %s plan %s (%s) with %s %s", what, pp, why, name, want.Version)
		st.plan, st.planVersion, st.planMalformed = &want, stat.Version, nil
	}
	return nil
}

// ensureEntry gives service name a deploy entry before its plan is rewritten, as publishPlans
// does before it writes a plan, unless the service is complete or has one.
func (r *RollingDeployReconciler) ensureEntry(ctx context.Context, s *scope, name string) error {
	spec := s.specs[name]
	if s.complete(name) {
		return nil
	}
	for _, e := range s.queue {
		if e.entry.Deploy == s.rd.Name && e.entry.Service == name && e.entry.Version == spec.Version {
			return nil
		}
	}
	e := zklayout.DeployEntry{Deploy: s.rd.Name, Service: name, Version: spec.Version, Generation: s.rd.Generation}
	data, err := r.Signer.Encode(r.Layout.DeployPrefix(name), &e)
	if err != nil {
		return fmt.Errorf("encode deploy entry for %s: %w", name, err)
	}
	created, err := r.ZK.Create(ctx, r.Layout.DeployPrefix(name), data, zkclient.PersistentSequential)
	if err != nil {
		return fmt.Errorf("create deploy entry for %s: %w", name, err)
	}
	child := path.Base(created)
	seq, err := zklayout.ParseSeq(child)
	if err != nil {
		return fmt.Errorf("deploy entry %s: %w", created, err)
	}
	s.queue = append(s.queue, deployEntry{child: child, seq: seq.Seq, entry: e})
	return nil
}

// tampered says how p, a plan of rd's for rd's current generation, differs from want in what
// only the spec decides; "" when it does not. A plan written for another generation may differ
// legitimately (publishPlans rewrites it), as may the fields that follow the Node list or the
// abort annotation.
func tampered(rd *v1alpha1.RollingDeploy, p, want zklayout.Plan) string {
	if p.DeployUID != string(rd.UID) || p.Generation != rd.Generation {
		return ""
	}
	var diffs []string
	diff := func(field, have, want string) {
		if have != want {
			diffs = append(diffs, fmt.Sprintf("%s %q instead of %q", field, have, want))
		}
	}
	diff("deploy", p.Deploy, want.Deploy)
	diff("service", p.Service, want.Service)
	diff("version", p.Version, want.Version)
	diff("selector", p.Selector, want.Selector)
	diff("dependsOn", strings.Join(p.DependsOn, ","), strings.Join(want.DependsOn, ","))
	diff("failurePolicy", p.FailurePolicy, want.FailurePolicy)
	return strings.Join(diffs, ", ")
}

// queueBlock reports a deploy entry that heads the queue and cannot be read (repairQueue could
// not delete it): the agents act on no entry behind it, so it holds every deploy. blocked maps
// each of rd's services with an entry behind it to the reason, and degraded says it for the
// Degraded condition. (A readable head of another RollingDeploy: waitingBehind.)
func queueBlock(l zklayout.Layout, rd string, queue []deployEntry, malformed []malformedEntry) (blocked map[string]string, degraded string) {
	var badHead *malformedEntry
	for i := range malformed {
		m := &malformed[i]
		if m.seq >= 0 && (len(queue) == 0 || m.seq < queue[0].seq) && (badHead == nil || m.seq < badHead.seq) {
			badHead = m
		}
	}
	if badHead == nil {
		return nil, ""
	}
	p := l.DeployEntry(badHead.child)
	degraded = fmt.Sprintf("deploy entry %s heads the deploy queue and cannot be read (%s): it blocks every deploy behind it", p, badHead.problem)
	blocked = map[string]string{}
	for _, e := range queue {
		if e.entry.Deploy == rd {
			blocked[e.entry.Service] = "waiting behind the unreadable deploy entry " + p
		}
	}
	return blocked, degraded
}
