package e2e

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// The origin goes down (its URL fails and the operator, the first seeder, is stopped) once the
// first node has the new version: the other nodes still complete from their peers.
func TestOriginDownNodesFinishFromPeers(t *testing.T) {
	// Downloads slow enough (≈3 MiB fixture at 1 MiB/s) that the origin vanishes mid-flight.
	s, ctx := start(t, harness.Config{RecordServices: []string{"a"}, AgentArgs: []string{"--p2p-download-rate=1048576"}})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3)))

	v2 := service(t, s, "a", "v2", harness.MinAvailable(3))
	setServices(t, s, ctx, "a", v2)
	must(t, s.Recorder.WaitStaging(ctx, "a", rolloutTime, "a first node with v2 staged", func(m map[string]string) bool {
		for _, st := range m {
			if strings.HasSuffix(st, " v2") {
				return true
			}
		}
		return false
	}))
	s.Artifacts.Fail("a-v2.tar.gz", http.StatusServiceUnavailable)
	must(t, s.Operator.Stop(10*time.Second))
	t.Logf("origin down: %d request(s) had reached it", s.Artifacts.Requests("a-v2.tar.gz"))

	must(t, s.WaitForServiceVersions(ctx, "a", "v2", rolloutTime))
}

// A node whose disk is full cannot stage the new version: the error is clear in ZooKeeper and
// status, its running service is untouched, and the other nodes roll on.
func TestDiskFullOnOneNode(t *testing.T) {
	s, ctx := start(t, harness.Config{SkipAgents: true, RecordServices: []string{"a"}})
	full := s.Node(5)
	// Room for v1 (its torrent data and the unpacked fixture), not for v2 as well.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", full.StateDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs as %s's state dir (the tests run as root): %v: %s", full.Name, err, out)
	}
	t.Cleanup(func() {
		// Host services outlive their agent: stop the node (agent and services, found by
		// their executables under the state dir) while the tmpfs is still mounted there.
		// Cleanups run last-in first-out, so the stack's own Stop would come after the
		// unmount and miss them.
		_ = full.Stop()
		_ = exec.Command("umount", "-l", full.StateDir).Run()
	})
	for _, n := range s.Nodes {
		must(t, n.Start())
	}
	gate := harness.Mutate(func(sp *rkv1alpha1.ServiceSpec) {
		four := intstr.FromInt32(4)
		sp.Distribution = &rkv1alpha1.DistributionSpec{MinStaged: &four}
	})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.MinAvailable(3), gate))
	// Fill what is left of the node's disk.
	if out, err := exec.Command("sh", "-c", "dd if=/dev/zero of="+full.StateDir+"/ballast bs=1M count=100 2>&1 || true").CombinedOutput(); err != nil {
		t.Fatalf("fill disk: %v: %s", err, out)
	}

	setServices(t, s, ctx, "a", service(t, s, "a", "v2", harness.MinAvailable(3), gate))
	rd, err := s.WaitForCondition(ctx, "a", rkv1alpha1.ConditionDegraded, metav1.ConditionTrue, rkv1alpha1.ReasonArtifactFailed, rolloutTime)
	must(t, err)
	msg := findCondition(rd, rkv1alpha1.ConditionDegraded).Message
	if !strings.Contains(msg, full.Name) || !strings.Contains(strings.ToLower(msg), "no space left") {
		t.Fatalf("Degraded message %q does not say %s ran out of disk", msg, full.Name)
	}
	t.Logf("Degraded: %s", msg)
	others := []string{"node-1", "node-2", "node-3", "node-4"}
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", rolloutTime, others...))
	v, err := full.Version(ctx, mustPort(t, s, "a"))
	must(t, err)
	if v != "v1" {
		t.Fatalf("%s serves %q, want its untouched v1", full.Name, v)
	}
}

func mustPort(t *testing.T, s *harness.Stack, svc string) int {
	t.Helper()
	p, err := s.ServicePort(svc)
	must(t, err)
	return p
}
