package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/seeder"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func TestDistributionMessageAdvice(t *testing.T) {
	spec := v1alpha1.ServiceSpec{Name: "a", Version: "v2", Artifact: v1alpha1.ArtifactSpec{URL: "http://origin/a.tgz"}}
	for _, tc := range []struct {
		name       string
		st         seeder.State
		want, nope string
	}{
		{"first attempt", seeder.State{}, "http://origin/a.tgz", "check the URL"},
		{"unreachable", seeder.State{Err: errors.New("connection refused"), Attempts: 3, NextAttempt: time.Now().Add(4 * time.Second)},
			"check the URL is reachable from the operator", "new version"},
		{"mismatch", seeder.State{Err: &seeder.MismatchError{URL: "http://origin/a.tgz", Want: "ab"}, Permanent: true},
			"sha256 mismatch", "reachable"},
		{"over budget", seeder.State{Err: fmt.Errorf("copy of a: %w", seeder.ErrOverBudget), Attempts: 2},
			"waiting for room in the seeder's directory", "reachable"},
		{"too large", seeder.State{Err: fmt.Errorf("a: %w: raise --seeder-max-bytes", seeder.ErrTooLarge), Permanent: true},
			"raise --seeder-max-bytes", "fix the artifact"},
		{"refused origin", seeder.State{Err: fmt.Errorf("read origin: %w: link-local", seeder.ErrOriginRefused), Permanent: true},
			"origin refused", "fix the artifact"},
	} {
		msg := distributionMessage(spec, tc.st)
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, tc.nope) {
			t.Errorf("%s: %q: want %q, not %q", tc.name, msg, tc.want, tc.nope)
		}
	}
}

func TestBlockerState(t *testing.T) {
	head := zklayout.DeployEntry{Deploy: "web", Service: "a", Version: "v2"}
	cur := []zklayout.Current{{Node: "node-1", Version: "v2"}, {Node: "node-2", Version: "v1"}}
	for _, tc := range []struct {
		name string
		st   serviceState
		want string
	}{
		{"failed", serviceState{plan: &zklayout.Plan{Version: "v2"}, obs: obsOf(cur, []zklayout.Failure{
			{Node: "node-3", Version: "v2", Kind: zklayout.FailureHealthCheck, Reason: "unhealthy"},
			{Node: "node-1", Version: "v1", Kind: zklayout.FailureHealthCheck}})}, "Failed HealthCheck on node-3"},
		{"paused", serviceState{plan: &zklayout.Plan{Version: "v2", Paused: true}, obs: obsOf(cur, nil)}, "paused"},
		{"upgrading", serviceState{plan: &zklayout.Plan{Version: "v2"}, obs: obsOf(cur, nil)}, "upgrading"},
		{"no plan", serviceState{obs: obsOf(cur, nil)}, "no plan"},
		{"superseded", serviceState{plan: &zklayout.Plan{Version: "v3"}, obs: obsOf(cur, nil)}, "superseded"},
	} {
		if got, _ := blockerState(head, &tc.st); got != tc.want {
			t.Errorf("%s: state %q, want %q", tc.name, got, tc.want)
		}
	}
}

func obsOf(cur []zklayout.Current, failures []zklayout.Failure) plan.Observation {
	return plan.Observation{Current: cur, Failures: failures}
}
