package controllers

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func TestApplySummary(t *testing.T) {
	digest := func(name string, complete bool, updated, total int32, failures ...zklayout.Failure) plan.Digest {
		d := plan.Digest{Complete: complete, Artifact: v1alpha1.ArtifactSpec{URL: "https://x/" + name, SHA256: sha1hex},
			Status: v1alpha1.ServiceStatus{Name: name, TargetVersion: "v2", Updated: updated, Total: total}}
		for _, f := range failures {
			if f.Kind == zklayout.FailureArtifact {
				d.ArtifactFailures = append(d.ArtifactFailures, f)
			} else {
				d.HealthFailures = append(d.HealthFailures, f)
			}
		}
		return d
	}
	health := zklayout.Failure{Node: "n2", Version: "v2", Kind: zklayout.FailureHealthCheck, Reason: "HTTP 500"}
	artifact := zklayout.Failure{Node: "n3", Version: "v2", Kind: zklayout.FailureArtifact, Reason: "sha256 mismatch"}
	type cond struct {
		status metav1.ConditionStatus
		reason string
		msg    string
	}
	tests := []struct {
		name     string
		sum      summary
		phase    v1alpha1.Phase
		progress string
		want     map[string]cond
	}{
		{
			name: "invalid", sum: summary{outcome: outcomeInvalid, reason: v1alpha1.ReasonInvalidSpec, message: "dependency cycle: a -> b -> a"},
			phase: v1alpha1.PhaseInvalid,
			want: map[string]cond{
				v1alpha1.ConditionReady:   {metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, "cycle"},
				v1alpha1.ConditionStalled: {metav1.ConditionTrue, v1alpha1.ReasonInvalidSpec, "a -> b -> a"},
			},
		},
		{
			name: "waiting", sum: summary{outcome: outcomeWaiting, message: `owned by "x"`, services: []plan.Digest{digest("a", false, 0, 3)}},
			phase: v1alpha1.PhaseWaiting, progress: "0/3",
			want: map[string]cond{
				v1alpha1.ConditionReconciling: {metav1.ConditionTrue, v1alpha1.ReasonServiceConflict, `"x"`},
				v1alpha1.ConditionStalled:     {metav1.ConditionFalse, v1alpha1.ReasonServiceConflict, ""},
			},
		},
		{
			name: "rolling", sum: summary{services: []plan.Digest{digest("a", true, 3, 3), digest("b", false, 1, 3)}},
			phase: v1alpha1.PhaseProgressing, progress: "4/6",
			want: map[string]cond{
				v1alpha1.ConditionReady:       {metav1.ConditionFalse, v1alpha1.ReasonProgressing, "b:"},
				v1alpha1.ConditionReconciling: {metav1.ConditionTrue, v1alpha1.ReasonProgressing, ""},
				v1alpha1.ConditionProgressing: {metav1.ConditionTrue, v1alpha1.ReasonProgressing, ""},
				v1alpha1.ConditionDegraded:    {metav1.ConditionFalse, v1alpha1.ReasonAsExpected, ""},
			},
		},
		{
			name: "complete", sum: summary{services: []plan.Digest{digest("a", true, 3, 3), digest("b", true, 2, 3)}},
			phase: v1alpha1.PhaseComplete, progress: "5/6",
			want: map[string]cond{
				v1alpha1.ConditionReady:       {metav1.ConditionTrue, v1alpha1.ReasonComplete, "a v2, b v2"},
				v1alpha1.ConditionReconciling: {metav1.ConditionFalse, v1alpha1.ReasonComplete, ""},
			},
		},
		{
			name: "health failure halts", sum: summary{services: []plan.Digest{digest("a", false, 1, 3, health)}},
			phase: v1alpha1.PhaseFailed, progress: "1/3",
			want: map[string]cond{
				v1alpha1.ConditionDegraded:    {metav1.ConditionTrue, v1alpha1.ReasonHealthCheckFailed, "node n2: HTTP 500"},
				v1alpha1.ConditionStalled:     {metav1.ConditionTrue, v1alpha1.ReasonHealthCheckFailed, "node n2"},
				v1alpha1.ConditionReconciling: {metav1.ConditionFalse, v1alpha1.ReasonHealthCheckFailed, ""},
			},
		},
		{
			name: "health failure with rollback", sum: summary{rollback: true, services: []plan.Digest{digest("a", false, 1, 3, health)}},
			phase: v1alpha1.PhaseFailed, progress: "1/3",
			want: map[string]cond{
				v1alpha1.ConditionStalled:     {metav1.ConditionTrue, v1alpha1.ReasonHealthCheckFailed, "roll back"},
				v1alpha1.ConditionReconciling: {metav1.ConditionTrue, v1alpha1.ReasonRollingBack, ""},
			},
		},
		{
			name: "artifact failure", sum: summary{services: []plan.Digest{digest("a", false, 0, 3, artifact)}},
			phase: v1alpha1.PhaseFailed, progress: "0/3",
			want: map[string]cond{
				v1alpha1.ConditionDegraded: {metav1.ConditionTrue, v1alpha1.ReasonArtifactFailed, "https://x/a (sha256 " + sha1hex},
				v1alpha1.ConditionStalled:  {metav1.ConditionFalse, v1alpha1.ReasonArtifactFailed, ""},
			},
		},
		{
			name: "paused", sum: summary{paused: true, services: []plan.Digest{digest("a", false, 1, 3)}},
			phase: v1alpha1.PhasePaused, progress: "1/3",
			want: map[string]cond{
				v1alpha1.ConditionReady:       {metav1.ConditionFalse, v1alpha1.ReasonPaused, "paused"},
				v1alpha1.ConditionReconciling: {metav1.ConditionFalse, v1alpha1.ReasonPaused, ""},
			},
		},
		{
			name: "malformed", sum: summary{malformed: []string{"znode /rk/deploy/x: bad"}, services: []plan.Digest{digest("a", false, 0, 1)}},
			phase: v1alpha1.PhaseProgressing, progress: "0/1",
			want: map[string]cond{
				v1alpha1.ConditionDegraded: {metav1.ConditionTrue, ReasonMalformedZnode, "/rk/deploy/x"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &v1alpha1.RollingDeployStatus{}
			applySummary(st, 7, tt.sum)
			if st.Phase != tt.phase || st.Progress != tt.progress {
				t.Fatalf("phase, progress = %s, %q; want %s, %q", st.Phase, st.Progress, tt.phase, tt.progress)
			}
			for typ, w := range tt.want {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || c.Status != w.status || c.Reason != w.reason || !strings.Contains(c.Message, w.msg) || c.ObservedGeneration != 7 {
					t.Errorf("%s = %+v, want %s/%s containing %q", typ, c, w.status, w.reason, w.msg)
				}
			}
		})
	}

	// ZooKeeper trouble keeps what was known and says why it may be stale.
	st := &v1alpha1.RollingDeployStatus{}
	applySummary(st, 1, summary{services: []plan.Digest{digest("a", false, 1, 3)}})
	applySummary(st, 2, summary{outcome: outcomeZooKeeper, reason: v1alpha1.ReasonZooKeeperError, message: "cannot reach ZooKeeper"})
	if st.Phase != v1alpha1.PhaseProgressing || st.Progress != "1/3" || len(st.Services) != 1 {
		t.Fatalf("status after ZooKeeper trouble = %+v", st)
	}
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c.Reason != v1alpha1.ReasonZooKeeperError {
		t.Fatalf("Ready = %+v", c)
	}
}
