package e2e

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/gitops"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// GitOps tools judge a RollingDeploy by its status: Flux through kstatus, Argo CD through the
// Lua health check in docs/argocd. Both run here on the real objects of a rollout as it goes
// through each state: just created, complete, just updated, progressing, paused, failed.
func TestGitOpsHealthOfRealObjects(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 3})
	script, err := gitops.ArgoScript()
	must(t, err)
	checkObj := func(what string, obj map[string]any, wantK status.Status, wantArgo string) {
		t.Helper()
		k, kmsg, err := gitops.KStatus(obj)
		must(t, err)
		h, err := gitops.ArgoHealth(script, obj)
		must(t, err)
		t.Logf("%s: kstatus %s (%s); Argo CD %s (%s)", what, k, kmsg, h.Status, h.Message)
		if k != wantK || h.Status != wantArgo {
			t.Errorf("%s: kstatus %s, Argo CD %s; want %s and %s\nstatus: %v", what, k, h.Status, wantK, wantArgo, obj["status"])
		}
	}
	check := func(what string, rd *rkv1alpha1.RollingDeploy, wantK status.Status, wantArgo string) {
		t.Helper()
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(rd)
		must(t, err)
		obj["apiVersion"], obj["kind"] = rkv1alpha1.GroupVersion.String(), "RollingDeploy"
		checkObj(what, obj, wantK, wantArgo)
	}
	cond := func(rd *rkv1alpha1.RollingDeploy, typ string) bool {
		return harness.Observed(rd) && meta.IsStatusConditionTrue(rd.Status.Conditions, typ)
	}

	// The object as the first apply returns it, before the operator wrote any status, as the
	// tools read it (JSON, not the Go type, which drops a zero observedGeneration): the CRD's
	// status default (observedGeneration 0) makes it read as not done yet.
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(harness.NewRollingDeploy("g", service(t, s, "g", "v1", harness.MinAvailable(2))))
	must(t, err)
	fresh := &unstructured.Unstructured{Object: obj}
	fresh.SetGroupVersionKind(rkv1alpha1.GroupVersion.WithKind("RollingDeploy"))
	must(t, s.Client.Create(ctx, fresh))
	checkObj("just created", fresh.Object, status.InProgressStatus, gitops.Progressing)
	rd, err := s.WaitForReady(ctx, "g", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "g", "v1", time.Minute))
	check("complete", rd, status.CurrentStatus, gitops.Healthy)

	// The object as the update returns it: a new generation the operator has not seen yet.
	// (UpdateRD reads it fresh, again on a conflict: the operator may still write status.)
	v2 := service(t, s, "g", "v2", harness.MinAvailable(2))
	must(t, s.UpdateRD(ctx, "g", func(u *rkv1alpha1.RollingDeploy) {
		u.Spec.Services = []rkv1alpha1.ServiceSpec{v2}
		rd = u // filled with the update's response
	}))
	check("just updated", rd, status.InProgressStatus, gitops.Progressing)

	// Mid-rollout: Reconciling. The first observed status of the new generation says so, as
	// nodes upgrade one at a time (quorum 2 of 3).
	rd, err = s.WaitForRD(ctx, "g", rolloutTime, "rollout of v2 under way", func(rd *rkv1alpha1.RollingDeploy) bool {
		return cond(rd, rkv1alpha1.ConditionReconciling) || cond(rd, rkv1alpha1.ConditionReady)
	})
	must(t, err)
	if cond(rd, rkv1alpha1.ConditionReconciling) {
		check("progressing", rd, status.InProgressStatus, gitops.Progressing)
	} else {
		t.Log("the rollout completed before a progressing status was read")
	}
	rd, err = s.WaitForReady(ctx, "g", rolloutTime)
	must(t, err)
	check("complete again", rd, status.CurrentStatus, gitops.Healthy)

	// Paused with a new version waiting: Argo CD shows Suspended; for kstatus it is not done.
	must(t, s.UpdateRD(ctx, "g", func(rd *rkv1alpha1.RollingDeploy) {
		rd.Spec.Paused = true
		rd.Spec.Services = []rkv1alpha1.ServiceSpec{service(t, s, "g", "v3", harness.MinAvailable(2))}
	}))
	rd, err = s.WaitForCondition(ctx, "g", rkv1alpha1.ConditionReady, metav1.ConditionFalse, rkv1alpha1.ReasonPaused, time.Minute)
	must(t, err)
	check("paused", rd, status.InProgressStatus, gitops.Suspended)

	// Resumed onto a version whose health check fails: Stalled, i.e. Failed and Degraded.
	must(t, s.UpdateRD(ctx, "g", func(rd *rkv1alpha1.RollingDeploy) {
		rd.Spec.Paused = false
		rd.Spec.Services = []rkv1alpha1.ServiceSpec{service(t, s, "g", "v4", harness.MinAvailable(2), harness.Unhealthy())}
	}))
	rd, err = s.WaitForCondition(ctx, "g", rkv1alpha1.ConditionStalled, metav1.ConditionTrue, rkv1alpha1.ReasonHealthCheckFailed, rolloutTime)
	must(t, err)
	check("failed", rd, status.FailedStatus, gitops.Degraded)
}
