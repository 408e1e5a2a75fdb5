package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/nodestate"
)

// mirrorRetry is the requeue after a RollingDeployNodeSet write lost a race (a conflict).
const mirrorRetry = 2 * time.Second

// nodeSetWrites remembers the RollingDeployNodeSets this process last wrote, so a pass that
// runs before the cache has seen the previous pass's write compares against that write, not
// against the older cached copy (which could hide a change that went back and forth).
type nodeSetWrites struct {
	mu      sync.Mutex
	written map[string]*v1alpha1.RollingDeployNodeSet
}

func (w *nodeSetWrites) get(name string) *v1alpha1.RollingDeployNodeSet {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written[name]
}

func (w *nodeSetWrites) set(name string, s *v1alpha1.RollingDeployNodeSet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.written == nil {
		w.written = map[string]*v1alpha1.RollingDeployNodeSet{}
	}
	if s == nil {
		delete(w.written, name)
		return
	}
	w.written[name] = s
}

// +kubebuilder:rbac:groups=rollkeeper.io,resources=rollingdeploynodesets,verbs=get;list;watch;create;update;delete

// mirrorNodes writes the per-node state of every service that the pass read from ZooKeeper into
// the RollingDeploy's RollingDeployNodeSets (see internal/nodestate), so users see it without
// ZooKeeper access. Only shards whose content changed are written; shards of services no longer
// in the spec are deleted. It returns whether a write lost a race (retry soon).
func (r *RollingDeployReconciler) mirrorNodes(ctx context.Context, s *scope) (retry bool, err error) {
	if s.state == nil {
		return false, nil // ZooKeeper was not read this pass: keep what is mirrored
	}
	rd := s.rd
	want := map[string]*v1alpha1.RollingDeployNodeSet{}
	var order []string
	for _, name := range s.order {
		st := s.state[name]
		if st == nil {
			continue
		}
		o := st.obs
		o.Service, o.Target, o.Selected = name, s.specs[name].Version, s.selected[name]
		for _, set := range nodestate.Shards(rd.Name, rd.UID, name, o.Target, nodestate.Entries(o)) {
			set := set
			if err := controllerutil.SetControllerReference(rd, &set, r.Scheme); err != nil {
				return false, fmt.Errorf("own RollingDeployNodeSet %s: %w", set.Name, err)
			}
			want[set.Name] = &set
			order = append(order, set.Name)
		}
	}

	have := &v1alpha1.RollingDeployNodeSetList{}
	if err := r.List(ctx, have, client.MatchingLabels{v1alpha1.LabelRollingDeployUID: string(rd.UID)}); err != nil {
		return false, fmt.Errorf("list RollingDeployNodeSets of %s: %w", rd.Name, err)
	}
	cached := map[string]*v1alpha1.RollingDeployNodeSet{}
	for i := range have.Items {
		h := &have.Items[i]
		if _, ok := want[h.Name]; ok {
			cached[h.Name] = h
			continue
		}
		if err := r.Delete(ctx, h); err != nil && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("delete RollingDeployNodeSet %s: %w", h.Name, err)
		}
		r.nodeSets.set(h.Name, nil)
	}

	for _, name := range order {
		w := want[name]
		base := cached[name]
		if last := r.nodeSets.get(name); last != nil && base != nil && base.ResourceVersion != last.ResourceVersion {
			base = last // the cache has not caught up with the last write (or someone else wrote)
		}
		// Missing from the cache: deleted, or created so recently the cache has not seen it
		// (then the create fails with AlreadyExists and the next pass compares).
		switch {
		case base == nil:
			err = r.Create(ctx, w)
		case nodestate.SameContent(base, w):
			continue
		default:
			w.ResourceVersion = base.ResourceVersion
			err = r.Update(ctx, w)
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) {
			// Stale base: forget it, the next pass compares against the cache.
			r.nodeSets.set(name, nil)
			retry = true
			continue
		}
		if err != nil {
			return retry, fmt.Errorf("write RollingDeployNodeSet %s: %w", name, err)
		}
		r.nodeSets.set(name, w.DeepCopy())
	}
	return retry, nil
}

// nodeSetDeleted lets only deletions of RollingDeployNodeSets through: the operator's own writes
// need no new pass, but a deleted shard is written again. A deleted shard's last write is
// forgotten (also when garbage collection removes the shards of a deleted RollingDeploy).
func (w *nodeSetWrites) nodeSetDeleted() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		UpdateFunc: func(event.UpdateEvent) bool { return false },
		DeleteFunc: func(e event.DeleteEvent) bool {
			w.set(e.Object.GetName(), nil)
			return true
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
