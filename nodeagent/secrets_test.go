package nodeagent_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// An exec health check runs with PATH and the run's variables: never with the agent's own
// environment, where the agent keeps its ZooKeeper credentials (ROLLKEEPER_ZK_AUTH).
func TestExecHealthCheckSeesNoAgentSecrets(t *testing.T) {
	t.Setenv("ROLLKEEPER_ZK_AUTH", "agent:zk-secret")
	t.Setenv("ROLLKEEPER_ZK_SERVERS", "zk-1:2181")
	out := filepath.Join(t.TempDir(), "environ")
	e := newEnv(t)
	// cp copies its own environment.
	hc := &zklayout.HealthCheck{Exec: &zklayout.Exec{Command: []string{"/bin/cp", "/proc/self/environ", out}},
		TimeoutSeconds: 5, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
	e.publish("a", "v1", "", 0, zklayout.FailurePolicyPause, hc)
	e.startAgents(1)
	e.waitFor("v1 registered", time.Minute, func() bool { return allOn(e.versions("a"), 1, "v1") })
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == "ROLLKEEPER_ZK_AUTH" || k == "ROLLKEEPER_ZK_SERVERS" {
			t.Errorf("the health check sees the agent's %s", kv)
		}
	}
	for _, want := range []string{"PATH=" + os.Getenv("PATH"), "ROLLKEEPER_VERSION=v1", "ROLLKEEPER_SERVICE=a", "ROLLKEEPER_NODE=node-01"} {
		if !slices.Contains(env, want) {
			t.Errorf("the health check's environment %q lacks %s", env, want)
		}
	}
	if len(env) != 6 { // PATH and the five run variables
		t.Errorf("the health check's environment = %q, want PATH and the run's variables only", env)
	}
}
