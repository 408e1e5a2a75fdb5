package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// serviceState is what one pass read from ZooKeeper about one service.
type serviceState struct {
	// plan is the decoded staging/<svc> payload; nil when there is none or it is malformed.
	plan *zklayout.Plan
	// planExists says staging/<svc> exists (possibly empty or malformed); planVersion is its
	// znode version, for compare-and-set.
	planExists  bool
	planVersion int32
	// planMalformed is set when staging/<svc> holds a payload that does not decode.
	planMalformed error
	// obs holds the decoded current/, staging/ and failures/ children (Service, Target,
	// Selected and MinAvailable are filled in later).
	obs plan.Observation
	// strays are the persistent children of current/<svc> and staging/<svc> (paths): agents
	// only make ephemeral ones there, so these are no live node's (repairStrays deletes them).
	strays []string
}

// zkDown reports whether err means ZooKeeper cannot be reached right now.
func zkDown(err error) bool {
	return errors.Is(err, zkclient.ErrUnavailable) || errors.Is(err, zkclient.ErrSessionExpired) ||
		errors.Is(err, zkclient.ErrClosed)
}

// children lists p's children; a missing p has none.
func (r *RollingDeployReconciler) children(ctx context.Context, p string) ([]string, error) {
	c, _, err := r.ZK.Children(ctx, p)
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil, nil
	}
	return c, err
}

// readPayload reads and decodes p. found is false when p does not exist; a payload that does
// not decode gives found=true and a malformed error (wrapping zklayout.ErrMalformed) the caller
// reports and never acts on.
func (r *RollingDeployReconciler) readPayload(ctx context.Context, p string, into zklayout.Payload) (found bool, version int32, malformed, err error) {
	found, st, malformed, err := r.readPayloadStat(ctx, p, into)
	return found, st.Version, malformed, err
}

// readPayloadStat is readPayload with the znode's whole Stat (its ephemeral owner, say).
func (r *RollingDeployReconciler) readPayloadStat(ctx context.Context, p string, into zklayout.Payload) (found bool, st zkclient.Stat, malformed, err error) {
	found, st, _, malformed, err = r.readSigned(ctx, p, "", into)
	return found, st, malformed, err
}

// readSigned is readPayloadStat for a signed znode (a plan, release or deploy entry), whose
// signature binds sigPath (the znode's path; a deploy entry's prefix): one that Trust does not
// verify is malformed. An empty sigPath reads an unsigned znode. data is what was read.
func (r *RollingDeployReconciler) readSigned(ctx context.Context, p, sigPath string, into zklayout.Payload) (found bool, st zkclient.Stat, data []byte, malformed, err error) {
	data, st, err = r.ZK.Get(ctx, p)
	if errors.Is(err, zkclient.ErrNoNode) {
		return false, st, nil, nil, nil
	}
	if err != nil {
		return false, st, nil, nil, err
	}
	if derr := r.decodeSigned(p, sigPath, data, into); derr != nil {
		return true, st, data, derr, nil
	}
	return true, st, data, nil, nil
}

// decodeSigned verifies (unless sigPath is empty) and decodes data read from p. A signature
// failure wraps zklayout.ErrMalformed as well: it is handled like any malformed znode.
func (r *RollingDeployReconciler) decodeSigned(p, sigPath string, data []byte, into zklayout.Payload) error {
	if sigPath != "" && r.Trust != nil {
		if _, err := r.Trust.Verify(sigPath, data); err != nil {
			return fmt.Errorf("znode %s: %w: %w", p, zklayout.ErrMalformed, err)
		}
	}
	if derr := zklayout.Decode(data, into); derr != nil {
		return fmt.Errorf("znode %s: %w", p, derr)
	}
	return nil
}

// readService reads a service's plan, registrations, staging queue and failures through the
// protocol's one reader (rollout.Reader, as the agents read them), and its progress/ children.
func (r *RollingDeployReconciler) readService(ctx context.Context, svc string) (*serviceState, error) {
	st := &serviceState{}
	snap, err := rollout.NewReader(r.statusReads(), r.Layout, svc, "", r.verify).Read(ctx, 0)
	if err != nil {
		return nil, err
	}
	p := r.Layout.StagingService(svc)
	if snap.PlanStat.Exists {
		st.planExists, st.planVersion = true, snap.PlanStat.Version
		st.plan = snap.Plan
		if snap.PlanBad != nil {
			st.planMalformed = fmt.Errorf("znode %s: %w", p, snap.PlanBad)
		}
	}
	st.obs.Selector = ""
	if st.plan != nil {
		st.obs.Selector = st.plan.Selector
	}
	malformed := func(err string) { st.obs.Malformed = append(st.obs.Malformed, err) }
	for _, reg := range snap.Current {
		path := r.Layout.CurrentNode(svc, reg.Node)
		switch {
		case reg.Bad == "":
			st.obs.Current = append(st.obs.Current, zklayout.Current{Node: reg.Node, Version: reg.Version, Labels: reg.Labels,
				Address: reg.Address, Since: reg.Since})
		case reg.Bad == "gone":
			continue
		case reg.Owner != 0:
			// Online, but nobody knows on which version; a live session's: the operator leaves
			// it to that node's agent, which replaces it.
			st.obs.CurrentUnreadable = append(st.obs.CurrentUnreadable, reg.Node)
			malformed(fmt.Sprintf("znode %s: %s (ephemeral: held by a live session, whose agent replaces it)", path, reg.Bad))
		default:
			malformed(fmt.Sprintf("znode %s: %s", path, reg.Bad))
		}
		if reg.Owner == 0 {
			// Agents only make ephemeral registrations: no live node's (repairStrays deletes it).
			st.strays = append(st.strays, path)
		}
	}
	for _, q := range snap.Queue {
		path := r.Layout.StagingChild(svc, q.Child)
		switch {
		case q.Gone:
			continue
		case q.Owner == 0:
			st.strays = append(st.strays, path)
			if q.Bad != nil {
				malformed(fmt.Sprintf("znode %s: %v", path, q.Bad))
			}
		case q.Bad != nil:
			malformed(fmt.Sprintf("znode %s: %v (ephemeral: held by a live session, whose agent replaces it)", path, q.Bad))
		default:
			st.obs.Staged = append(st.obs.Staged, q.Staged)
		}
	}
	st.obs.Queued = rollout.Queued(snap.Queue)
	for _, n := range snap.BadStaging {
		// Outside the queue's order (not <node>-<counter>): nobody's turn depends on it.
		path := r.Layout.StagingChild(svc, n)
		_, stat, err := r.statusReads().Get(ctx, path)
		switch {
		case errors.Is(err, zkclient.ErrNoNode):
		case err != nil:
			return nil, err
		case stat.EphemeralOwner == 0:
			st.strays = append(st.strays, path)
		default:
			malformed(fmt.Sprintf("znode %s: not <node>-<counter> (ephemeral: held by a live session)", path))
		}
	}
	if st.obs.Progress, err = readChildren[zklayout.Progress](ctx, r, r.Layout.ProgressService(svc),
		func(n string) string { return r.Layout.ProgressNode(svc, n) }, func(_ string, err error) { malformed(err.Error()) }); err != nil {
		return nil, err
	}
	st.obs.Failures = snap.Failures
	for _, b := range snap.BadFailures {
		malformed(fmt.Sprintf("failure record %s/%s", r.Layout.FailureService(svc), b))
	}
	for i := range st.obs.Failures {
		if f := &st.obs.Failures[i]; f.Kind == zklayout.FailureArtifact {
			f.Reason = withholdDigests(f.Reason)
		}
	}
	return st, nil
}

// verify is the reader's check of signed znodes: one that Trust does not verify is malformed
// (it wraps zklayout.ErrMalformed as well as the signature error).
func (r *RollingDeployReconciler) verify(sigPath string, data []byte, into zklayout.Payload) (bool, error) {
	if r.Trust != nil {
		if _, err := r.Trust.Verify(sigPath, data); err != nil {
			return true, fmt.Errorf("%w: %w", zklayout.ErrMalformed, err)
		}
	}
	return false, zklayout.Decode(data, into)
}

// sha256Hex is a sha256 digest in hex, standing alone.
var sha256Hex = regexp.MustCompile(`\b[0-9a-fA-F]{64}\b`)

// withholdDigests replaces every sha256 digest in an agent's artifact failure reason. An agent
// may report the digest it computed from what it downloaded ("want sha256 X, got Y"); status
// and events are readable by anyone with view, who could copy it into a spec and so bless
// whatever the origin served. The spec's digest is named by the status message already.
func withholdDigests(reason string) string {
	return sha256Hex.ReplaceAllString(reason, "[digest withheld]")
}

// readChildren decodes every child of parent (child builds its path) into a T, through the
// status cache. Children that vanish are skipped; unreadable ones go to bad and are never
// acted on.
func readChildren[T any, P interface {
	*T
	zklayout.Payload
}](ctx context.Context, r *RollingDeployReconciler, parent string, child func(string) string, bad func(string, error)) ([]T, error) {
	zk := r.statusReads()
	names, _, err := zk.Children(ctx, parent)
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []T
	for _, n := range names {
		var v T
		p := child(n)
		data, _, err := zk.Get(ctx, p)
		switch {
		case errors.Is(err, zkclient.ErrNoNode):
		case err != nil:
			return nil, err
		default:
			if derr := r.decodeSigned(p, "", data, P(&v)); derr != nil {
				bad(n, derr)
				continue
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// ensureRelease writes releases/<svc>/<version> if it is missing. An existing release with a
// different artifact, or one that does not decode, is a conflict: the returned message says what
// to do, and nothing is written. Run and health check changes of an existing version are applied.
func (r *RollingDeployReconciler) ensureRelease(ctx context.Context, spec v1alpha1.ServiceSpec, now time.Time) (conflict string, err error) {
	want := plan.Release(spec, now)
	p := r.Layout.Release(spec.Name, spec.Version)
	var have zklayout.Release
	found, stat, haveData, bad, err := r.readSigned(ctx, p, p, &have)
	if err != nil {
		return "", err
	}
	if bad != nil {
		return fmt.Sprintf("%v; delete that znode so the operator can rewrite it", bad), nil
	}
	if found {
		if err := plan.ReleaseConflict(have, want); err != nil {
			return err.Error(), nil
		}
		want.CreatedAt = have.CreatedAt
		if r.Signer == nil {
			// Unsigned: compare what the payloads say, not how they were written.
			haveData, _ = zklayout.Encode(&have)
		}
		wantData, err := r.Signer.Encode(p, &want)
		if err != nil {
			return "", fmt.Errorf("encode release %s/%s: %w", spec.Name, spec.Version, err)
		}
		// Signed (deterministic) bytes also differ when another trusted key signed it: re-signed.
		if !bytes.Equal(haveData, wantData) {
			if _, err := r.ZK.Set(ctx, p, wantData, stat.Version); err != nil {
				return "", fmt.Errorf("update release %s/%s: %w", spec.Name, spec.Version, err)
			}
		}
		return "", nil
	}
	data, err := r.Signer.Encode(p, &want)
	if err != nil {
		return "", fmt.Errorf("encode release %s/%s: %w", spec.Name, spec.Version, err)
	}
	if err := r.ZK.EnsurePath(ctx, r.Layout.ReleaseService(spec.Name)); err != nil {
		return "", err
	}
	if _, err := r.ZK.Create(ctx, p, data, zkclient.Persistent); err != nil {
		return "", fmt.Errorf("create release %s/%s: %w", spec.Name, spec.Version, err)
	}
	return "", nil
}

// clearFailures deletes every failures/<svc> child.
func (r *RollingDeployReconciler) clearFailures(ctx context.Context, svc string) error {
	names, err := r.children(ctx, r.Layout.FailureService(svc))
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := r.ZK.Delete(ctx, r.Layout.Failure(svc, n), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			return fmt.Errorf("clear failures of %s: %w", svc, err)
		}
	}
	return nil
}

// deployEntry is a decoded deploy/ child.
type deployEntry struct {
	child string
	seq   int64
	entry zklayout.DeployEntry
}

// malformedEntry is a deploy/ child that is no deploy entry: a name ZooKeeper did not make, or
// a payload that does not decode. It is never acted on; repairQueue deletes it.
type malformedEntry struct {
	child string
	// seq orders it in the queue; -1 for a name without a counter (the agents ignore those).
	seq     int64
	problem string
}

// readDeployQueue decodes the deploy/ children in queue order. Entries that do not parse are
// returned apart (in queue order, names without a counter last) and never acted on.
func (r *RollingDeployReconciler) readDeployQueue(ctx context.Context) ([]deployEntry, []malformedEntry, error) {
	names, err := r.children(ctx, r.Layout.Deploy())
	if err != nil {
		return nil, nil, err
	}
	ordered, badNames := zklayout.SortSeq(names)
	var malformed []malformedEntry
	var out []deployEntry
	for _, s := range ordered {
		var e zklayout.DeployEntry
		found, _, _, bad, err := r.readSigned(ctx, r.Layout.DeployEntry(s.Child), r.Layout.DeployPrefix(s.Name), &e)
		switch {
		case err != nil:
			return nil, nil, err
		case !found:
		case bad != nil:
			malformed = append(malformed, malformedEntry{child: s.Child, seq: s.Seq, problem: bad.Error()})
		default:
			out = append(out, deployEntry{child: s.Child, seq: s.Seq, entry: e})
		}
	}
	for _, b := range badNames {
		malformed = append(malformed, malformedEntry{child: b, seq: -1,
			problem: fmt.Sprintf("znode %s is not a sequential deploy entry", r.Layout.DeployEntry(b))})
	}
	return out, malformed, nil
}

// deleteEntries deletes the deploy entries of RollingDeploy rd for which drop returns true and
// returns the queue without them.
func (r *RollingDeployReconciler) deleteEntries(ctx context.Context, queue []deployEntry, rd string, drop func(zklayout.DeployEntry) bool) ([]deployEntry, error) {
	var kept []deployEntry
	for _, e := range queue {
		if e.entry.Deploy != rd || !drop(e.entry) {
			kept = append(kept, e)
			continue
		}
		if err := r.ZK.Delete(ctx, r.Layout.DeployEntry(e.child), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
			return nil, fmt.Errorf("delete deploy entry %s: %w", e.child, err)
		}
	}
	return kept, nil
}

// createEntry appends a deploy entry for one service of rd.
func (r *RollingDeployReconciler) createEntry(ctx context.Context, rd *v1alpha1.RollingDeploy, spec v1alpha1.ServiceSpec, catchUp bool) error {
	data, err := r.Signer.Encode(r.Layout.DeployPrefix(spec.Name), &zklayout.DeployEntry{Deploy: rd.Name, Service: spec.Name, Version: spec.Version, Generation: rd.Generation,
		CatchUp: catchUp})
	if err != nil {
		return fmt.Errorf("encode deploy entry for %s: %w", spec.Name, err)
	}
	if _, err := r.ZK.Create(ctx, r.Layout.DeployPrefix(spec.Name), data, zkclient.PersistentSequential); err != nil {
		return fmt.Errorf("create deploy entry for %s: %w", spec.Name, err)
	}
	return nil
}

// ownedPlans scans staging/ for the plans RollingDeploy uid holds, by service.
func (r *RollingDeployReconciler) ownedPlans(ctx context.Context, uid string) (map[string]zklayout.Plan, error) {
	names, err := r.children(ctx, r.Layout.Staging())
	if err != nil {
		return nil, err
	}
	out := map[string]zklayout.Plan{}
	for _, svc := range names {
		var p zklayout.Plan
		_, _, bad, err := r.readPayload(ctx, r.Layout.StagingService(svc), &p)
		if err != nil {
			return nil, err
		}
		if bad == nil && p.DeployUID == uid {
			out[svc] = p
		}
	}
	return out, nil
}

// releaseService gives up a service rd held: its staging/<svc> tree (plan and queue) and its
// failures go; current/ stays. The release of the plan's version goes too when no online node
// runs it (so a corrected artifact can reuse the version); releases still running stay.
func (r *RollingDeployReconciler) releaseService(ctx context.Context, svc string, p zklayout.Plan) error {
	st, err := r.readService(ctx, svc)
	if err != nil {
		return err
	}
	// Keep the release if anything might run it: an online node, a node in the middle of its
	// upgrade, or a node whose registration cannot be read.
	keep := len(st.obs.CurrentUnreadable) > 0
	for _, c := range st.obs.Current {
		keep = keep || c.Version == p.Version
	}
	for _, s := range st.obs.Staged {
		keep = keep || s.State == zklayout.StagedUpgrading
	}
	if err := r.ZK.DeleteTree(ctx, r.Layout.StagingService(svc)); err != nil {
		return fmt.Errorf("delete plan of %s: %w", svc, err)
	}
	if err := r.clearFailures(ctx, svc); err != nil {
		return err
	}
	if keep {
		return nil
	}
	if err := r.ZK.Delete(ctx, r.Layout.Release(svc, p.Version), -1); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
		return fmt.Errorf("delete unused release %s/%s: %w", svc, p.Version, err)
	}
	return nil
}

// statusReads is what the status pass reads through: the watch-fed cache once
// SetupWithManager made it, ZooKeeper directly before (tests that call a pass by hand).
func (r *RollingDeployReconciler) statusReads() rollout.Client {
	if r.cache != nil {
		return r.cache
	}
	return r.ZK
}
