package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// EventAborted marks the pass that first saw a RollingDeploy aborted.
const EventAborted = "Aborted"

// abortedAt returns the value of the abort annotation and whether it is set.
func abortedAt(rd *v1alpha1.RollingDeploy) (string, bool) {
	v, ok := rd.Annotations[v1alpha1.AnnotationAborted]
	return v, ok
}

// paused says whether the rollout may start no new node upgrade: spec.paused, or aborted.
func paused(rd *v1alpha1.RollingDeploy) bool {
	_, aborted := abortedAt(rd)
	return rd.Spec.Paused || aborted
}

// applyAbort reports an abort in status: the condition Aborted while the annotation is set
// (removed with it), and, while the rollout is held (phase Paused), Ready, Reconciling and
// Progressing say why. It records an event when the abort is first seen.
func (r *RollingDeployReconciler) applyAbort(rd *v1alpha1.RollingDeploy, prev *v1alpha1.RollingDeployStatus) {
	st := &rd.Status
	at, aborted := abortedAt(rd)
	if !aborted {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionAborted)
		return
	}
	msg := fmt.Sprintf("aborted at %s (annotation %s): upgrades already under way finish, no node starts a new one; "+
		"remove the annotation to lift the abort", at, v1alpha1.AnnotationAborted)
	setCondition(st, rd.Generation, v1alpha1.ConditionAborted, metav1.ConditionTrue, v1alpha1.ReasonAborted, msg)
	if st.Phase == v1alpha1.PhasePaused {
		setCondition(st, rd.Generation, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonAborted, msg)
		setCondition(st, rd.Generation, v1alpha1.ConditionReconciling, metav1.ConditionFalse, v1alpha1.ReasonAborted, msg)
		setCondition(st, rd.Generation, v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonAborted, msg)
	}
	if !meta.IsStatusConditionTrue(prev.Conditions, v1alpha1.ConditionAborted) {
		r.event(rd, corev1.EventTypeNormal, EventAborted, "%s", msg)
	}
}
