package controllers

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// ReasonInternalError: a pass panicked (a bug, or input nobody foresaw). The pass is dropped,
// reported (status, event, log with the stack, metric) and retried; other RollingDeploys and
// later passes go on.
const ReasonInternalError = "InternalError"

// position is where a pass is, for a panic report: the phase, and the service and znode it
// is working on when known.
type position struct {
	phase, service, znode string
}

func (p position) String() string {
	parts := []string{"phase " + orNone(p.phase)}
	if p.service != "" {
		parts = append(parts, "service "+p.service)
	}
	if p.znode != "" {
		parts = append(parts, "znode "+p.znode)
	}
	return strings.Join(parts, ", ")
}

// phaseHook is called at every position a pass records (tests make it panic).
type phaseHook func(rd, phase, service string)

// at records where the pass is.
func (s *scope) at(phase, service, znode string) {
	s.pos = position{phase: phase, service: service, znode: znode}
	if s.hook != nil {
		s.hook(s.rd.Name, phase, service)
	}
}

// hook returns the test hook, if one is set.
func (r *RollingDeployReconciler) hook() phaseHook {
	if h := r.testHook.Load(); h != nil {
		return *h
	}
	return nil
}

// recoverPanic, deferred in Reconcile after the status patch is, turns a panic of the pass into
// its error: logged with the stack, counted, and reported in the Degraded condition (the status
// patch then writes it and emitTransitions records the Warning event). The controller retries
// the RollingDeploy with backoff; the panic goes no further.
func (r *RollingDeployReconciler) recoverPanic(ctx context.Context, s *scope, reterr *error) {
	v := recover()
	if v == nil {
		return
	}
	err := fmt.Errorf("internal error at %s: panic: %v", s.pos, v)
	logf.FromContext(ctx).Error(err, "reconcile panicked; the pass is dropped and retried",
		"phase", s.pos.phase, "service", s.pos.service, "znode", s.pos.znode, "stack", string(debug.Stack()))
	reconcilePanics.WithLabelValues(s.rd.Name, s.pos.service, s.pos.phase).Inc()
	setCondition(&s.rd.Status, s.rd.Generation, v1alpha1.ConditionDegraded, metav1.ConditionTrue, ReasonInternalError,
		err.Error()+"; the operator retries the pass (please report this bug)")
	*reterr = err
}
