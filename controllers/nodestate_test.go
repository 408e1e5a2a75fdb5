package controllers

import (
	"context"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// mirrored reads the nodes the RollingDeployNodeSets of rd's service svc hold, by name.
func mirrored(t *testing.T, rd *v1alpha1.RollingDeploy, svc string) (map[string]v1alpha1.NodeEntry, []v1alpha1.RollingDeployNodeSet) {
	t.Helper()
	list := &v1alpha1.RollingDeployNodeSetList{}
	if err := k8s.List(context.Background(), list, client.MatchingLabels{
		v1alpha1.LabelRollingDeployUID: string(rd.UID), v1alpha1.LabelService: svc}); err != nil {
		t.Fatal(err)
	}
	out := map[string]v1alpha1.NodeEntry{}
	for _, s := range list.Items {
		for _, e := range s.Nodes {
			out[e.Name] = e
		}
	}
	return out, list.Items
}

func TestNodeStatesAreMirrored(t *testing.T) {
	nodes := nodeNames("mirror", 3)
	makeNodes(t, "mirror", nodes...)
	cleanupZK(t, "mirror-a")
	register(t, "mirror-a", "mirror-n1", "v1")
	register(t, "mirror-a", "mirror-n2", "v1")
	createRD(t, newRD("mirror", service("mirror-a", "v2", "mirror", quorum(intstr.FromInt32(1)))))
	rd := getRD(t, "mirror")

	state := func(node string, want v1alpha1.NodeState, online bool) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%s mirrored %s", node, want), func() (bool, string) {
			got, sets := mirrored(t, rd, "mirror-a")
			e := got[node]
			// An online node's entry says since when it runs its version (the dashboard shows it).
			ok := e.State == want && e.Online == online && (!online || e.Since != nil) && len(sets) == 1 && sets[0].Name == "mirror-mirror-a-0" &&
				len(sets[0].OwnerReferences) == 1 && sets[0].OwnerReferences[0].UID == rd.UID
			return ok, fmt.Sprintf("%+v", got)
		})
	}
	state("mirror-n1", v1alpha1.NodeRunning, true)
	state("mirror-n3", v1alpha1.NodeUnreachable, false)

	staged := stage(t, "mirror-a", "mirror-n1", "v2")
	state("mirror-n1", v1alpha1.NodeStaged, true)
	startUpgrade(t, "mirror-a", "mirror-n1", "v2", staged)
	state("mirror-n1", v1alpha1.NodeUpgrading, false)
	finishUpgrade(t, "mirror-a", "mirror-n1", "v2", staged)
	state("mirror-n1", v1alpha1.NodeUpdated, true)
	recordFailure(t, "mirror-a", "mirror-n2", "v2", zklayout.FailureHealthCheck, "GET /healthz: 500")
	state("mirror-n2", v1alpha1.NodeFailed, true)

	// A deleted shard comes back.
	_, sets := mirrored(t, rd, "mirror-a")
	if err := k8s.Delete(context.Background(), &sets[0]); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	state("mirror-n2", v1alpha1.NodeFailed, true)
}

func TestAbortHoldsTheRolloutWhateverSpecPausedSays(t *testing.T) {
	nodes := nodeNames("abort", 2)
	makeNodes(t, "abort", nodes...)
	cleanupZK(t, "abort-a")
	for _, n := range nodes {
		register(t, "abort-a", n, "v1")
	}
	createRD(t, newRD("abort", service("abort-a", "v2", "abort", quorum(intstr.FromInt32(1)))))
	waitServiceStatus(t, "abort", "abort-a", func(s v1alpha1.ServiceStatus) bool { return s.Online == 2 })

	updateRD(t, "abort", func(rd *v1alpha1.RollingDeploy) {
		if rd.Annotations == nil {
			rd.Annotations = map[string]string{}
		}
		rd.Annotations[v1alpha1.AnnotationAborted] = "2026-01-02T03:04:05Z"
	})
	rd := waitCondition(t, "abort", v1alpha1.ConditionAborted, condTrue, v1alpha1.ReasonAborted, "2026-01-02T03:04:05Z")
	if rd.Status.Phase != v1alpha1.PhasePaused || condition(rd, v1alpha1.ConditionReady).Reason != v1alpha1.ReasonAborted {
		t.Fatalf("status of an aborted rollout: %+v", rd.Status)
	}
	waitFor(t, "the plan published paused", func() (bool, string) {
		p, ok := readPlan(t, "abort-a")
		return ok && p.Paused, fmt.Sprintf("%+v", p)
	})
	waitEvent(t, "abort", EventAborted)

	// The annotation goes: spec.paused (false) applies again.
	updateRD(t, "abort", func(rd *v1alpha1.RollingDeploy) { delete(rd.Annotations, v1alpha1.AnnotationAborted) })
	waitFor(t, "the abort lifted", func() (bool, string) {
		rd := getRD(t, "abort")
		p, _ := readPlan(t, "abort-a")
		return !p.Paused && rd.Status.Phase == v1alpha1.PhaseProgressing && meta.FindStatusCondition(rd.Status.Conditions, v1alpha1.ConditionAborted) == nil,
			fmt.Sprintf("plan paused %t, status %+v", p.Paused, rd.Status)
	})
}
