package plan

import (
	"slices"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func TestDigestReportsUnselectedRegistrations(t *testing.T) {
	d := DigestService(Observation{
		Service: "a", Target: "v2", MinAvailable: 1, Selected: []string{"n1", "n2"},
		Current:           []zklayout.Current{{Node: "n1", Version: "v2"}, {Node: "n2", Version: "v2"}, {Node: "stray", Version: "v2"}},
		CurrentUnreadable: []string{"ghost"},
	})
	st := d.Status
	if st.Online != 2 || st.Updated != 2 || st.Total != 2 {
		t.Fatalf("an unselected registration was counted: %+v", st)
	}
	if !slices.Equal(d.Unselected, []string{"ghost", "stray"}) {
		t.Fatalf("Unselected = %v", d.Unselected)
	}
	Phase(&d, PhaseInput{})
	if !strings.Contains(d.Status.Message, "nodeSelector does not select, not counted online: ghost, stray") {
		t.Fatalf("message = %q", d.Status.Message)
	}
}

func TestDigestNamesNodesHoldingTheDistributionGate(t *testing.T) {
	three := 3
	for _, tc := range []struct {
		name      string
		minStaged *int
		current   []zklayout.Current
		staged    []zklayout.Staged
		want      []string
	}{
		{name: "default gate: every online node", current: []zklayout.Current{{Node: "n1", Version: "v1"}, {Node: "n2", Version: "v1"}, {Node: "n3", Version: "v1"}},
			staged: []zklayout.Staged{{Node: "n2", Version: "v2", State: zklayout.StagedReady}}, want: []string{"n1", "n3"}},
		{name: "open: every online node staged or updated", current: []zklayout.Current{{Node: "n1", Version: "v2"}, {Node: "n2", Version: "v1"}},
			staged: []zklayout.Staged{{Node: "n2", Version: "v2", State: zklayout.StagedReady}}},
		{name: "minStaged 3 of 4", minStaged: &three,
			current: []zklayout.Current{{Node: "n1", Version: "v1"}, {Node: "n2", Version: "v1"}, {Node: "n3", Version: "v1"}, {Node: "n4", Version: "v1"}},
			staged:  []zklayout.Staged{{Node: "n4", Version: "v2", State: zklayout.StagedReady}}, want: []string{"n1", "n2", "n3"}},
		{name: "minStaged met", minStaged: &three,
			current: []zklayout.Current{{Node: "n1", Version: "v2"}, {Node: "n2", Version: "v1"}, {Node: "n3", Version: "v1"}, {Node: "n4", Version: "v1"}},
			staged:  []zklayout.Staged{{Node: "n2", Version: "v2", State: zklayout.StagedReady}, {Node: "n3", Version: "v2", State: zklayout.StagedReady}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := DigestService(Observation{Service: "a", Target: "v2", MinAvailable: 1, Selected: []string{"n1", "n2", "n3", "n4"},
				MinStaged: tc.minStaged, Current: tc.current, Staged: tc.staged})
			if !slices.Equal(d.NotStaged, tc.want) {
				t.Fatalf("NotStaged = %v, want %v", d.NotStaged, tc.want)
			}
			Phase(&d, PhaseInput{})
			has := strings.Contains(d.Status.Message, "distribution gate")
			if has != (tc.want != nil) || tc.want != nil && !strings.Contains(d.Status.Message, "not staged yet: "+strings.Join(tc.want, ", ")) {
				t.Fatalf("message = %q", d.Status.Message)
			}
		})
	}
}

func TestPhaseBlockedByQueueHead(t *testing.T) {
	d := DigestService(Observation{Service: "a", Target: "v2", MinAvailable: 1, Selected: []string{"n1"},
		Current: []zklayout.Current{{Node: "n1", Version: "v1"}}})
	Phase(&d, PhaseInput{BlockedBy: "waiting behind deploy entry /rk/deploy/x-0000000001"})
	if d.Status.Phase != v1alpha1.PhasePending || !strings.Contains(d.Status.Message, "/rk/deploy/x-0000000001") {
		t.Fatalf("phase %s, message %q", d.Status.Phase, d.Status.Message)
	}
	// A service waiting for its own dependencies says so first.
	Phase(&d, PhaseInput{WaitingFor: []string{"b"}, BlockedBy: "waiting behind x"})
	if !strings.Contains(d.Status.Message, "waiting for b") {
		t.Fatalf("message %q", d.Status.Message)
	}
}

func TestAgentErrorIsReportedNotHalting(t *testing.T) {
	o := Observation{Service: "a", Target: "v2", MinAvailable: 1, Selected: []string{"n1", "n2"},
		Current:  []zklayout.Current{{Node: "n1", Version: "v1"}, {Node: "n2", Version: "v1"}},
		Failures: []zklayout.Failure{{Node: "n2", Version: "v1", Kind: zklayout.FailureAgent, Reason: "panic in step: boom"}}}
	d := DigestService(o)
	Phase(&d, PhaseInput{})
	if len(d.HealthFailures) != 0 || len(d.ArtifactFailures) != 0 || len(d.AgentFailures) != 1 {
		t.Fatalf("failures: health %v artifact %v agent %v", d.HealthFailures, d.ArtifactFailures, d.AgentFailures)
	}
	if d.Status.Phase != v1alpha1.PhaseProgressing {
		t.Fatalf("phase %s, want Progressing (an agent error never halts)", d.Status.Phase)
	}
	if !strings.Contains(d.Status.Message, "n2") || !strings.Contains(d.Status.Message, "boom") {
		t.Fatalf("message does not name the node and reason: %q", d.Status.Message)
	}
}

func TestSignatureFailureIsReportedNotHalting(t *testing.T) {
	o := Observation{Service: "a", Target: "v2", MinAvailable: 1, Selected: []string{"n1", "n2"},
		Current: []zklayout.Current{{Node: "n1", Version: "v1"}, {Node: "n2", Version: "v1"}},
		Failures: []zklayout.Failure{{Node: "n1", Version: "unknown", Kind: zklayout.FailureSignature,
			Reason: "znode /rollkeeper/staging/a: not signed"}}}
	d := DigestService(o)
	Phase(&d, PhaseInput{})
	if len(d.HealthFailures) != 0 || len(d.ArtifactFailures) != 0 || len(d.SignatureFailures) != 1 {
		t.Fatalf("failures: health %v artifact %v signature %v", d.HealthFailures, d.ArtifactFailures, d.SignatureFailures)
	}
	if d.Status.Phase != v1alpha1.PhaseProgressing {
		t.Fatalf("phase %s, want Progressing (a refused signature never halts)", d.Status.Phase)
	}
	if !strings.Contains(d.Status.Message, "n1") || !strings.Contains(d.Status.Message, "/rollkeeper/staging/a") {
		t.Fatalf("message does not name the node and znode: %q", d.Status.Message)
	}
}

// A refused origin is refused for good: the advice is to change the artifact, not to wait.
func TestArtifactFailureMessageRefusedOrigin(t *testing.T) {
	a := v1alpha1.ArtifactSpec{URL: "http://169.254.169.254/latest", SHA256: strings.Repeat("a", 64)}
	m := ArtifactFailureMessage("web", a, []zklayout.Failure{{Node: "origin", Version: "v2", Kind: zklayout.FailureArtifact,
		Reason: "read origin http://169.254.169.254/latest: origin refused: link-local address"}})
	if strings.Contains(m, "retries") || !strings.Contains(m, "--seeder-allow-origin-cidrs") {
		t.Fatalf("message: %s", m)
	}
}
