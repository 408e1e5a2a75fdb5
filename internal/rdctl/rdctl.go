// Package rdctl carries out the user's actions on a RollingDeploy (pause, resume, abort) with
// the user's own client, for the kubectl plugin and its dashboard alike: both say and refuse
// the same things.
package rdctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
)

// ErrNotFound is returned (wrapped) when the RollingDeploy does not exist.
var ErrNotFound = errors.New("not found")

// ErrAborted is returned (wrapped) by Resume of an aborted RollingDeploy.
var ErrAborted = errors.New("aborted")

// Get reads RollingDeploy name.
func Get(ctx context.Context, c client.Client, name string) (*v1alpha1.RollingDeploy, error) {
	rd := &v1alpha1.RollingDeploy{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, rd); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("RollingDeploy %q %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("get RollingDeploy %s: %w", name, err)
	}
	return rd, nil
}

func patch(ctx context.Context, c client.Client, rd *v1alpha1.RollingDeploy, p map[string]any) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, rd, client.RawPatch(types.MergePatchType, data)); err != nil {
		return fmt.Errorf("patch RollingDeploy %s: %w", rd.Name, err)
	}
	return nil
}

// Pause sets spec.paused and returns what it did, in a sentence.
func Pause(ctx context.Context, c client.Client, name string) (string, error) {
	rd, err := Get(ctx, c, name)
	if err != nil {
		return "", err
	}
	if err := patch(ctx, c, rd, map[string]any{"spec": map[string]any{"paused": true}}); err != nil {
		return "", err
	}
	return fmt.Sprintf("rollingdeploy/%s paused: upgrades under way finish, no node starts a new one", name), nil
}

// Resume clears spec.paused; it refuses an aborted RollingDeploy (ErrAborted).
func Resume(ctx context.Context, c client.Client, name string) (string, error) {
	rd, err := Get(ctx, c, name)
	if err != nil {
		return "", err
	}
	if at, ok := rd.Annotations[v1alpha1.AnnotationAborted]; ok {
		return "", fmt.Errorf("rollingdeploy/%s was %w at %s and stays stopped; to lift the abort, remove the annotation "+
			"(kubectl annotate rollingdeploy %s %s-), then resume", name, ErrAborted, at, name, v1alpha1.AnnotationAborted)
	}
	if err := patch(ctx, c, rd, map[string]any{"spec": map[string]any{"paused": false}}); err != nil {
		return "", err
	}
	return fmt.Sprintf("rollingdeploy/%s resumed", name), nil
}

// Abort pauses the RollingDeploy and marks it aborted at now; aborting twice is a no-op.
func Abort(ctx context.Context, c client.Client, name string, now time.Time) (string, error) {
	rd, err := Get(ctx, c, name)
	if err != nil {
		return "", err
	}
	if at, ok := rd.Annotations[v1alpha1.AnnotationAborted]; ok {
		return fmt.Sprintf("rollingdeploy/%s was already aborted at %s", name, at), nil
	}
	at := now.UTC().Format(time.RFC3339)
	if err := patch(ctx, c, rd, map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{v1alpha1.AnnotationAborted: at}},
		"spec":     map[string]any{"paused": true},
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("rollingdeploy/%s aborted at %s: upgrades under way finish, no node starts a new one, "+
		"nothing that runs is touched; resume is refused until the annotation %s is removed", name, at, v1alpha1.AnnotationAborted), nil
}

// Promote ends the canary phase of service (every service with a canary when "") at its
// current target version: it annotates the RollingDeploy with the version promoted, so a later
// version has a canary phase again. A service without a canary is refused by name.
func Promote(ctx context.Context, c client.Client, name, service string) (string, error) {
	rd, err := Get(ctx, c, name)
	if err != nil {
		return "", err
	}
	ann := map[string]any{}
	var done []string
	for _, s := range rd.Spec.Services {
		if service != "" && s.Name != service {
			continue
		}
		if st := plan.Strategy(rd.Spec, s); st.Canary == nil {
			if service != "" {
				return "", fmt.Errorf("service %s of rollingdeploy/%s has no canary phase to promote", service, name)
			}
			continue
		}
		ann[v1alpha1.AnnotationPromotePrefix+s.Name] = s.Version
		done = append(done, s.Name+" "+s.Version)
	}
	if len(done) == 0 {
		if service != "" {
			return "", fmt.Errorf("rollingdeploy/%s has no service %s", name, service)
		}
		return "", fmt.Errorf("rollingdeploy/%s has no service with a canary phase", name)
	}
	if err := patch(ctx, c, rd, map[string]any{"metadata": map[string]any{"annotations": ann}}); err != nil {
		return "", err
	}
	return fmt.Sprintf("rollingdeploy/%s promoted: %s (the other nodes follow, as the quorum and gates allow)", name, strings.Join(done, ", ")), nil
}
