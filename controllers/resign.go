package controllers

import (
	"context"
	"errors"
	"fmt"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Resign signs again with the operator's key every plan, release and deploy entry that another
// trusted key signed: the step of a key rotation that lets the old key be dropped from the
// agents' trusted keys (docs/security.md). Unsigned or untrusted znodes are left alone: they
// are repaired or reported as malformed, never laundered into valid ones. Concurrent writers
// win: a znode changed since it was read is skipped (whoever changed it signed it). It returns
// how many znodes it re-signed.
func (r *RollingDeployReconciler) Resign(ctx context.Context) (int, error) {
	if r.Signer == nil || r.Trust == nil {
		return 0, nil
	}
	if r.Guard != nil {
		if err := r.Guard.Err(); err != nil {
			return 0, err
		}
	}
	type target struct{ path, sigPath string }
	var targets []target
	svcs, err := r.children(ctx, r.Layout.Staging())
	if err != nil {
		return 0, err
	}
	for _, svc := range svcs {
		targets = append(targets, target{r.Layout.StagingService(svc), r.Layout.StagingService(svc)})
	}
	svcs, err = r.children(ctx, r.Layout.Releases())
	if err != nil {
		return 0, err
	}
	for _, svc := range svcs {
		versions, err := r.children(ctx, r.Layout.ReleaseService(svc))
		if err != nil {
			return 0, err
		}
		for _, v := range versions {
			targets = append(targets, target{r.Layout.Release(svc, v), r.Layout.Release(svc, v)})
		}
	}
	entries, err := r.children(ctx, r.Layout.Deploy())
	if err != nil {
		return 0, err
	}
	ordered, _ := zklayout.SortSeq(entries)
	for _, e := range ordered {
		targets = append(targets, target{r.Layout.DeployEntry(e.Child), r.Layout.DeployPrefix(e.Name)})
	}
	n := 0
	for _, t := range targets {
		data, st, err := r.ZK.Get(ctx, t.path)
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("re-sign %s: %w", t.path, err)
		}
		id, err := r.Trust.Verify(t.sigPath, data)
		if err != nil || id == r.Signer.KeyID() {
			continue
		}
		signed, err := r.Signer.Sign(t.sigPath, data)
		if err != nil {
			return n, err
		}
		switch _, err := r.ZK.Set(ctx, t.path, signed, st.Version); {
		case errors.Is(err, zkclient.ErrBadVersion), errors.Is(err, zkclient.ErrNoNode):
		case err != nil:
			return n, fmt.Errorf("re-sign %s: %w", t.path, err)
		default:
			n++
		}
	}
	return n, nil
}
