package backend

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// environ is the environment pid runs with, as the kernel holds it, once pid has executed its
// program (between fork and exec it shows an empty one, and the agent's credentials).
func environ(t *testing.T, pid int) []string {
	t.Helper()
	var b []byte
	waitUntil(t, "the service's exec", func() bool {
		var err error
		if b, err = os.ReadFile("/proc/" + itoa(pid) + "/environ"); err != nil {
			t.Fatal(err)
		}
		return len(b) > 0
	})
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// A service sees PATH, its run's variables and the owner marker: none of the agent's
// environment, where the agent keeps its ZooKeeper credentials.
func TestExecServiceSeesNoAgentSecrets(t *testing.T) {
	t.Setenv("ROLLKEEPER_ZK_AUTH", "agent:zk-secret")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "agent-cloud-secret")
	t.Setenv("PATH", "/usr/bin:/bin:/rollkeeper-agent-path")
	dir := t.TempDir()
	e, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.StopAll(context.Background()) })
	spec := Spec{Version: "v1", Command: []string{"/bin/sleep", "300"},
		Env: []string{"ROLLKEEPER_VERSION=v1", "GREETING=hello"}, StopGrace: time.Second}
	if err := e.Start(context.Background(), "a", spec); err != nil {
		t.Fatal(err)
	}
	got := environ(t, e.Status("a").PID)
	want := []string{"PATH=/usr/bin:/bin:/rollkeeper-agent-path", "ROLLKEEPER_VERSION=v1", "GREETING=hello", ownerEnv + "=" + dir}
	if !slices.Equal(got, want) {
		t.Fatalf("service environment = %q, want %q", got, want)
	}
}
