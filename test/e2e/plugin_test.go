package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// kubectlRollkeeper runs the built plugin with the stack's kubeconfig and returns its output
// (stdout, then stderr) and exit code.
func kubectlRollkeeper(t *testing.T, s *harness.Stack, ctx context.Context, args ...string) (string, int) {
	t.Helper()
	bins, err := harness.Build(ctx, harness.PluginBinary)
	must(t, err)
	cmd := exec.CommandContext(ctx, bins[harness.PluginBinary], append(args, "--kubeconfig="+s.Kubeconfig)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return stdout.String() + stderr.String(), exit.ExitCode()
	case err != nil:
		t.Fatalf("kubectl-rollkeeper %v: %v", args, err)
	}
	return stdout.String() + stderr.String(), 0
}

// nodeRows parses the node rows of a status output: node name to its VERSION, ONLINE and STATE.
func nodeRows(out string) map[string][3]string {
	rows := map[string][3]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.HasPrefix(f[0], "node-") {
			rows[f[0]] = [3]string{f[1], f[2], f[3]}
		}
	}
	return rows
}

// waitStatus runs `status NAME` until every node's row matches want (nil: any state), and
// returns the last output.
func waitStatus(t *testing.T, s *harness.Stack, ctx context.Context, name, what string, want func(node string, row [3]string) bool) string {
	t.Helper()
	var out string
	err := harness.WaitFor(ctx, rolloutTime, what, func(ctx context.Context) (bool, error) {
		var code int
		out, code = kubectlRollkeeper(t, s, ctx, "status", name)
		if code != 0 {
			return false, fmt.Errorf("status exited %d: %s", code, out)
		}
		rows := nodeRows(out)
		if len(rows) != nodes {
			return false, nil
		}
		for n, r := range rows {
			if !want(n, r) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%v\nlast output:\n%s", err, out)
	}
	t.Logf("kubectl rollkeeper status %s (%s):\n%s", name, what, out)
	return out
}

// canStop runs can-stop and checks its exit code and that its output holds every one of want.
func canStop(t *testing.T, s *harness.Stack, ctx context.Context, node string, code int, want ...string) {
	t.Helper()
	out, got := kubectlRollkeeper(t, s, ctx, "can-stop", node, "--service", "a")
	t.Logf("kubectl rollkeeper can-stop %s --service a (exit %d):\n%s", node, got, out)
	if got != code {
		t.Fatalf("can-stop %s exited %d, want %d:\n%s", node, got, code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("can-stop %s output lacks %q:\n%s", node, w, out)
		}
	}
}

// The plugin against the real stack: per-node status during and after a rollout, pause and
// resume, can-stop yes and no (with a node down), and abort.
func TestKubectlPlugin(t *testing.T) {
	s, ctx := start(t, harness.Config{RecordServices: []string{"a"}})
	deployV1(t, s, ctx, "web", service(t, s, "a", "v1", harness.MinAvailable(3)))
	waitStatus(t, s, ctx, "web", "every node on v1", func(_ string, r [3]string) bool {
		return r == [3]string{"v1", "yes", "Updated"}
	})
	canStop(t, s, ctx, "node-3", 0, "a (rollingdeploy web): yes", "online 5, minAvailable 3: stopping node-3 leaves 4 ≥ 3")

	// Paused: the nodes stage v2 and wait; none goes down.
	out, code := kubectlRollkeeper(t, s, ctx, "pause", "web")
	if code != 0 {
		t.Fatalf("pause exited %d: %s", code, out)
	}
	pausedAt := time.Now()
	setServices(t, s, ctx, "web", service(t, s, "a", "v2", harness.MinAvailable(3)))
	_, err := s.WaitForRD(ctx, "web", time.Minute, "paused at v2", func(rd *rkv1alpha1.RollingDeploy) bool {
		return harness.Observed(rd) && rd.Status.Phase == rkv1alpha1.PhasePaused
	})
	must(t, err)
	out = waitStatus(t, s, ctx, "web", "every node staged v2 while paused", func(_ string, r [3]string) bool {
		return r == [3]string{"v1", "yes", "Staged"}
	})
	if !strings.Contains(out, "PAUSED") {
		t.Fatalf("status of a paused rollout does not say so:\n%s", out)
	}
	for _, n := range s.Nodes {
		if wentOffline(s, "a", n.Name, pausedAt) {
			t.Fatalf("%s went down while the rollout was paused\n%s", n.Name, s.Recorder.Report("a"))
		}
	}

	out, code = kubectlRollkeeper(t, s, ctx, "resume", "web")
	if code != 0 {
		t.Fatalf("resume exited %d: %s", code, out)
	}
	_, err = s.WaitForReady(ctx, "web", rolloutTime)
	must(t, err)
	waitStatus(t, s, ctx, "web", "every node on v2", func(_ string, r [3]string) bool {
		return r == [3]string{"v2", "yes", "Updated"}
	})

	// minAvailable equals the node count: no node may stop.
	setServices(t, s, ctx, "web", service(t, s, "a", "v2", harness.MinAvailable(nodes)))
	_, err = s.WaitForRD(ctx, "web", time.Minute, "minAvailable 5", func(rd *rkv1alpha1.RollingDeploy) bool {
		st := harness.ServiceStatus(rd, "a")
		return harness.Observed(rd) && st != nil && st.MinAvailable == nodes
	})
	must(t, err)
	canStop(t, s, ctx, "node-1", 1, "a (rollingdeploy web): no", "online 5, minAvailable 5: stopping node-1 would leave 4 < 5",
		"no: node-1 cannot go down now")

	// node-5 goes down: it is listed as down, and is itself free to stay down.
	must(t, s.Node(5).Stop())
	waitStatus(t, s, ctx, "web", "node-5 unreachable", func(n string, r [3]string) bool {
		if n == "node-5" {
			return r == [3]string{"-", "no", "Unreachable"}
		}
		return r[2] == "Updated"
	})
	canStop(t, s, ctx, "node-1", 1, "online 4, minAvailable 5: stopping node-1 would leave 3 < 5", "already down: node-5 (Unreachable)")
	canStop(t, s, ctx, "node-5", 0, "node-5 is already down")
	must(t, s.Node(5).Start())
	setServices(t, s, ctx, "web", service(t, s, "a", "v2", harness.MinAvailable(3)))
	_, err = s.WaitForReady(ctx, "web", rolloutTime)
	must(t, err)

	// Abort, then a new version: the nodes stage it and none upgrades; resume is refused, and
	// even spec.paused=false does not restart the rollout.
	out, code = kubectlRollkeeper(t, s, ctx, "abort", "web")
	t.Logf("kubectl rollkeeper abort web:\n%s", out)
	if code != 0 {
		t.Fatalf("abort exited %d: %s", code, out)
	}
	abortedAt := time.Now()
	_, err = s.WaitForCondition(ctx, "web", rkv1alpha1.ConditionAborted, metav1.ConditionTrue, rkv1alpha1.ReasonAborted, time.Minute)
	must(t, err)
	setServices(t, s, ctx, "web", service(t, s, "a", "v3", harness.MinAvailable(3)))
	out = waitStatus(t, s, ctx, "web", "every node staged v3 after the abort", func(_ string, r [3]string) bool {
		return r == [3]string{"v2", "yes", "Staged"}
	})
	if !strings.Contains(out, "ABORTED") {
		t.Fatalf("status of an aborted rollout does not say so:\n%s", out)
	}
	out, code = kubectlRollkeeper(t, s, ctx, "resume", "web")
	t.Logf("kubectl rollkeeper resume web (exit %d):\n%s", code, out)
	if code != 2 || !strings.Contains(out, "was aborted at") {
		t.Fatalf("resume of an aborted rollout exited %d: %s", code, out)
	}
	must(t, s.UpdateRD(ctx, "web", func(rd *rkv1alpha1.RollingDeploy) { rd.Spec.Paused = false }))
	rd, err := s.WaitForRD(ctx, "web", time.Minute, "held by the abort with spec.paused=false", func(rd *rkv1alpha1.RollingDeploy) bool {
		ready := meta.FindStatusCondition(rd.Status.Conditions, rkv1alpha1.ConditionReady)
		return harness.Observed(rd) && !rd.Spec.Paused && rd.Status.Phase == rkv1alpha1.PhasePaused &&
			ready != nil && ready.Reason == rkv1alpha1.ReasonAborted
	})
	must(t, err)
	waitStatus(t, s, ctx, "web", "still every node staged v3", func(_ string, r [3]string) bool {
		return r == [3]string{"v2", "yes", "Staged"}
	})
	out, code = kubectlRollkeeper(t, s, ctx, "status", "--wide")
	t.Logf("kubectl rollkeeper status --wide (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, "MESSAGE") {
		t.Fatalf("status --wide exited %d:\n%s", code, out)
	}
	for _, n := range s.Nodes {
		if wentOffline(s, "a", n.Name, abortedAt) {
			t.Fatalf("%s went down after the abort\n%s\n%s", n.Name, harness.DescribeStatus(rd), s.Recorder.Report("a"))
		}
	}
}
