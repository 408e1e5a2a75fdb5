package dashboard

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// EventNamespace is where Events of RollingDeploys (cluster-scoped) are recorded: Kubernetes
// records events of cluster-scoped objects in the default namespace.
const EventNamespace = "default"

// Access says what the user's RBAC lets the dashboard show and do.
type Access struct {
	// Deploys, NodeSets and Events: may list and watch them.
	Deploys  bool `json:"deploys"`
	NodeSets bool `json:"nodeSets"`
	Events   bool `json:"events"`
	// Patch: may patch RollingDeploys (pause, resume, abort).
	Patch bool `json:"patch"`
	// Denied names what the user may not see, in words the page shows.
	Denied string `json:"denied,omitempty"`
}

// NewScheme returns the scheme the dashboard's clients use.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// CheckAccess asks the API server (SelfSubjectAccessReview) what the user may do.
func CheckAccess(ctx context.Context, c client.Client) (Access, error) {
	may := func(verb, group, resource, ns string) (bool, error) {
		r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: ns}}}
		if err := c.Create(ctx, r); err != nil {
			return false, fmt.Errorf("ask the API server whether you may %s %s: %w", verb, resource, err)
		}
		return r.Status.Allowed, nil
	}
	both := func(group, resource, ns string) (bool, error) {
		l, err := may("list", group, resource, ns)
		if err != nil || !l {
			return false, err
		}
		return may("watch", group, resource, ns)
	}
	var a Access
	var err error
	g := v1alpha1.GroupVersion.Group
	if a.Deploys, err = both(g, "rollingdeploys", ""); err != nil {
		return a, err
	}
	if a.NodeSets, err = both(g, "rollingdeploynodesets", ""); err != nil {
		return a, err
	}
	if a.Events, err = both("", "events", EventNamespace); err != nil {
		return a, err
	}
	if a.Patch, err = may("patch", g, "rollingdeploys", ""); err != nil {
		return a, err
	}
	var denied []string
	if !a.Deploys {
		denied = append(denied, "RollingDeploys")
	}
	if !a.NodeSets {
		denied = append(denied, "RollingDeployNodeSets (no node map)")
	}
	if !a.Events {
		denied = append(denied, "events in namespace "+EventNamespace+" (no timeline)")
	}
	if len(denied) > 0 {
		a.Denied = fmt.Sprintf("your RBAC does not let you list and watch %v", denied)
	}
	return a, nil
}

// Watch fills store from informers on what access allows, until ctx ends. It returns once the
// first listings are in (or ctx ends); the informers run on in a goroutine it owns, which ends
// with ctx. done is closed when that goroutine has ended.
func Watch(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, access Access, store *Store, log logr.Logger) (done <-chan struct{}, err error) {
	c, err := cache.New(cfg, cache.Options{
		Scheme:           scheme,
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Event{}: {
				Namespaces: map[string]cache.Config{EventNamespace: {}},
				Field:      fields.OneTermEqualSelector("involvedObject.kind", "RollingDeploy"),
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard: informers: %w", err)
	}
	if access.Deploys {
		err = watchKind(ctx, c, &v1alpha1.RollingDeploy{}, "RollingDeploys", store, log,
			func(rd *v1alpha1.RollingDeploy) (string, any) { return keyDeploy + rd.Name, viewDeploy(rd) })
	}
	if err == nil && access.NodeSets {
		err = watchKind(ctx, c, &v1alpha1.RollingDeployNodeSet{}, "RollingDeployNodeSets", store, log,
			func(ns *v1alpha1.RollingDeployNodeSet) (string, any) { return keyNodeSet + ns.Name, viewNodeSet(ns) })
	}
	if err == nil && access.Events {
		err = watchKind(ctx, c, &corev1.Event{}, "Events", store, log,
			func(ev *corev1.Event) (string, any) { return keyEvent + ev.Namespace + "/" + ev.Name, viewEvent(ev) })
	}
	if err != nil {
		return nil, err
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		if err := c.Start(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error(err, "informers stopped")
			store.SetMeta(func(m *Meta) { m.Error = "watching the API server stopped: " + err.Error() })
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		<-finished
		return finished, fmt.Errorf("dashboard: first listing: %w", context.Cause(ctx))
	}
	store.SetMeta(func(m *Meta) { m.Synced = true })
	return finished, nil
}

// watchKind keeps store in step with the informer on obj's kind: view gives an object's key
// and what the page gets of it.
func watchKind[T client.Object](ctx context.Context, c cache.Cache, obj T, name string, store *Store, log logr.Logger, view func(T) (string, any)) error {
	inf, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("dashboard: informer on %s: %w", name, err)
	}
	put := func(o any) {
		if t, ok := o.(T); ok {
			k, v := view(t)
			if err := store.Put(k, v); err != nil {
				log.Error(err, "store object")
			}
		}
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    put,
		UpdateFunc: func(_, o any) { put(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if t, ok := o.(T); ok {
				k, _ := view(t)
				store.Delete(k)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("dashboard: watch %s: %w", name, err)
	}
	return nil
}
