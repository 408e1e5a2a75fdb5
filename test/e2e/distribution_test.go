package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/controllers"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// The origin is down when a new version is applied: no plan names it (nodes could not fetch
// it), status says the origin cannot be read and what to check, and once the origin answers
// again the operator's seeder, retrying by itself, publishes the torrent and the rollout
// finishes with nobody touching anything.
func TestOriginDownThenBackHealsByItself(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 3, RecordServices: []string{"a"}})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(2)))

	v2 := service(t, s, "a", "v2", harness.MinAvailable(2))
	name := v2.Artifact.URL[strings.LastIndex(v2.Artifact.URL, "/")+1:]
	s.Artifacts.Fail(name, http.StatusServiceUnavailable)
	setServices(t, s, ctx, "a", v2)
	rd, err := s.WaitForCondition(ctx, "a", rkv1alpha1.ConditionDegraded, metav1.ConditionTrue, controllers.ReasonOriginUnreachable, rolloutTime)
	must(t, err)
	msg := findCondition(rd, rkv1alpha1.ConditionDegraded).Message
	if !strings.Contains(msg, "check the URL is reachable from the operator") || !strings.Contains(msg, v2.Artifact.URL) {
		t.Fatalf("Degraded message %q: want the URL and the advice to check it is reachable from the operator", msg)
	}
	t.Logf("while the origin is down: %s", msg)
	if v, err := planVersion(ctx, s, "a"); err != nil || v != "v1" {
		t.Fatalf("plan of a names %q (%v) while v2 cannot be distributed; want v1", v, err)
	}

	asked := s.Artifacts.Requests(name)
	s.Artifacts.Fail(name, 0)
	_, err = s.WaitForReady(ctx, "a", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
	t.Logf("origin asked %d time(s) while down, %d in all", asked, s.Artifacts.Requests(name))
}

// A RollingDeploy whose service fails its health check holds the head of the shared deploy
// queue. Another RollingDeploy's service waits behind it, and says so: its status names the
// blocking service, version, RollingDeploy and state, an event records it, and `kubectl
// rollkeeper status` shows it.
func TestDeployWaitingBehindAnotherSaysSo(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 3})
	deployV1(t, s, ctx, "web", service(t, s, "a", "v1", harness.MinAvailable(1)))
	deployV1(t, s, ctx, "other", service(t, s, "c", "v1", harness.MinAvailable(1)))

	setServices(t, s, ctx, "web", service(t, s, "a", "v2", harness.MinAvailable(1), harness.Unhealthy()))
	_, err := s.WaitForCondition(ctx, "web", rkv1alpha1.ConditionDegraded, metav1.ConditionTrue, rkv1alpha1.ReasonHealthCheckFailed, rolloutTime)
	must(t, err)

	setServices(t, s, ctx, "other", service(t, s, "c", "v2", harness.MinAvailable(1)))
	rd, err := s.WaitForCondition(ctx, "other", rkv1alpha1.ConditionProgressing, metav1.ConditionTrue, controllers.ReasonWaitingBehindDeploy, rolloutTime)
	must(t, err)
	want := "waiting behind a v2 of RollingDeploy web (Failed HealthCheck on "
	msg := findCondition(rd, rkv1alpha1.ConditionProgressing).Message
	if !strings.HasPrefix(msg, want) {
		t.Fatalf("Progressing message %q: want it to start with %q", msg, want)
	}
	t.Logf("other: %s", msg)

	must(t, harness.WaitFor(ctx, time.Minute, "a WaitingBehind event of other", func(ctx context.Context) (bool, error) {
		var evs eventsv1.EventList
		if err := s.Client.List(ctx, &evs); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == controllers.EventWaitingBehind && e.Regarding.Name == "other" && strings.HasPrefix(e.Note, want) {
				return true, nil
			}
		}
		return false, nil
	}))
	out, _ := kubectlRollkeeper(t, s, ctx, "status", "other")
	if !strings.Contains(out, want) {
		t.Fatalf("kubectl rollkeeper status other does not say what it waits behind:\n%s", out)
	}
	if got, err := s.ServiceVersions(ctx, "c"); err == nil {
		for node, v := range got {
			if v != "v1" {
				t.Fatalf("c on %s answers %q while it waits behind web; want v1", node, v)
			}
		}
	}
}
