package plan

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func svc(name string, deps ...string) v1alpha1.ServiceSpec {
	return v1alpha1.ServiceSpec{
		Name:      name,
		Version:   "v2",
		Artifact:  v1alpha1.ArtifactSpec{URL: "https://example.com/" + name + ".tar.gz", SHA256: sha, Unpack: v1alpha1.UnpackTarGz},
		DependsOn: deps,
		Quorum:    v1alpha1.QuorumSpec{MinAvailable: intstr.FromInt32(1)},
		Run:       v1alpha1.RunSpec{Command: []string{"/bin/true"}},
	}
}

func TestTopoOrder(t *testing.T) {
	tests := []struct {
		name     string
		services []v1alpha1.ServiceSpec
		want     []string
		cycle    []string
	}{
		{name: "single", services: []v1alpha1.ServiceSpec{svc("a")}, want: []string{"a"}},
		{name: "chain declared backwards", services: []v1alpha1.ServiceSpec{svc("c", "b"), svc("b", "a"), svc("a")}, want: []string{"a", "b", "c"}},
		{name: "independent by name", services: []v1alpha1.ServiceSpec{svc("z"), svc("m"), svc("a")}, want: []string{"a", "m", "z"}},
		{name: "diamond", services: []v1alpha1.ServiceSpec{svc("d", "b", "c"), svc("c", "a"), svc("b", "a"), svc("a")}, want: []string{"a", "b", "c", "d"}},
		{name: "ties released later sort among ready", services: []v1alpha1.ServiceSpec{svc("b"), svc("c"), svc("a", "c")}, want: []string{"b", "c", "a"}},
		{name: "unknown dependency ignored", services: []v1alpha1.ServiceSpec{svc("a", "ghost")}, want: []string{"a"}},
		{name: "two-cycle", services: []v1alpha1.ServiceSpec{svc("a", "b"), svc("b", "a")}, cycle: []string{"a", "b", "a"}},
		{name: "three-cycle behind a root", services: []v1alpha1.ServiceSpec{svc("root"), svc("x", "root", "z"), svc("y", "x"), svc("z", "y")}, cycle: []string{"x", "y", "z", "x"}},
		{name: "self", services: []v1alpha1.ServiceSpec{svc("a", "a")}, cycle: []string{"a", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TopoOrder(tt.services)
			if tt.cycle != nil {
				var ce *CycleError
				if !errors.As(err, &ce) {
					t.Fatalf("TopoOrder() error = %v, want a cycle", err)
				}
				if !slices.Equal(ce.Cycle, tt.cycle) {
					t.Fatalf("cycle = %v, want %v", ce.Cycle, tt.cycle)
				}
				return
			}
			if err != nil {
				t.Fatalf("TopoOrder() error = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("TopoOrder() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	withQuorum := func(q intstr.IntOrString) v1alpha1.ServiceSpec {
		s := svc("a")
		s.Quorum.MinAvailable = q
		return s
	}
	badSel := svc("a")
	badSel.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}}
	badSHA := svc("a")
	badSHA.Artifact.SHA256 = "xyz"
	badURL := svc("a")
	badURL.Artifact.URL = "ftp://example.com/a"
	noCmd := svc("a")
	noCmd.Run.Command = nil
	tests := []struct {
		name     string
		services []v1alpha1.ServiceSpec
		want     []string // substrings of the message; nil means valid
	}{
		{name: "valid", services: []v1alpha1.ServiceSpec{svc("a"), svc("b", "a")}},
		{name: "empty", want: []string{"spec.services is empty"}},
		{name: "cycle", services: []v1alpha1.ServiceSpec{svc("a", "b"), svc("b", "a")}, want: []string{"dependency cycle: a -> b -> a"}},
		{name: "duplicate", services: []v1alpha1.ServiceSpec{svc("a"), svc("a")}, want: []string{`service name "a" is used more than once`}},
		{name: "unknown dep", services: []v1alpha1.ServiceSpec{svc("a", "ghost")}, want: []string{`service "a" depends on "ghost", which is not a service`}},
		{name: "self dep", services: []v1alpha1.ServiceSpec{svc("a", "a")}, want: []string{`service "a" depends on itself`}},
		{name: "bad percentage", services: []v1alpha1.ServiceSpec{withQuorum(intstr.FromString("150%"))}, want: []string{"outside 0%..100%"}},
		{name: "not a percentage", services: []v1alpha1.ServiceSpec{withQuorum(intstr.FromString("three"))}, want: []string{"neither an integer nor a percentage"}},
		{name: "negative", services: []v1alpha1.ServiceSpec{withQuorum(intstr.FromInt32(-1))}, want: []string{"negative"}},
		{name: "bad selector", services: []v1alpha1.ServiceSpec{badSel}, want: []string{"nodeSelector"}},
		{name: "bad sha", services: []v1alpha1.ServiceSpec{badSHA}, want: []string{"not 64 hex digits"}},
		{name: "bad url", services: []v1alpha1.ServiceSpec{badURL}, want: []string{"scheme must be http, https or file"}},
		{name: "no command", services: []v1alpha1.ServiceSpec{noCmd}, want: []string{"run.command is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(v1alpha1.RollingDeploySpec{Services: tt.services})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want a *ValidationError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestResolveQuorum(t *testing.T) {
	tests := []struct {
		q       intstr.IntOrString
		nodes   int
		want    int
		wantErr string
	}{
		{q: intstr.FromInt32(3), nodes: 5, want: 3},
		{q: intstr.FromInt32(5), nodes: 5, want: 5},
		{q: intstr.FromInt32(0), nodes: 0, want: 0},
		{q: intstr.FromString("60%"), nodes: 5, want: 3},
		{q: intstr.FromString("60%"), nodes: 4, want: 3}, // 2.4 rounds up
		{q: intstr.FromString("50%"), nodes: 3, want: 2},
		{q: intstr.FromString("100%"), nodes: 7, want: 7},
		{q: intstr.FromString("0%"), nodes: 7, want: 0},
		{q: intstr.FromString("1%"), nodes: 0, want: 0},
		{q: intstr.FromInt32(6), nodes: 5, wantErr: "quorum.minAvailable 6 is larger than the 5 node(s)"},
		{q: intstr.FromInt32(1), nodes: 0, wantErr: "larger than the 0 node(s)"},
		{q: intstr.FromString("101%"), nodes: 5, wantErr: "outside"},
	}
	for _, tt := range tests {
		t.Run(tt.q.String()+"/"+strings.Repeat("n", tt.nodes), func(t *testing.T) {
			got, err := ResolveQuorum(tt.q, tt.nodes)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ResolveQuorum() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveQuorum() = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestSelectorString(t *testing.T) {
	tests := []struct {
		sel  *metav1.LabelSelector
		want string
	}{
		{sel: nil, want: ""},
		{sel: &metav1.LabelSelector{}, want: ""},
		{sel: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "db", "az": "1"}}, want: "az=1,role=db"},
		{sel: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"b", "a"}}}}, want: "tier in (a,b)"},
	}
	for _, tt := range tests {
		got, err := SelectorString(tt.sel)
		if err != nil || got != tt.want {
			t.Errorf("SelectorString(%v) = %q, %v; want %q", tt.sel, got, err, tt.want)
		}
	}
}

func TestReleaseAndPlan(t *testing.T) {
	s := svc("b", "a")
	s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"role": "web"}}
	s.HealthCheck = &v1alpha1.HealthCheckSpec{HTTPGet: &v1alpha1.HTTPGetCheck{Port: 8080}}
	s.Run.Env = []v1alpha1.EnvVar{{Name: "X", Value: "1"}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	r := Release(s, now)
	if _, err := zklayout.Encode(&r); err != nil {
		t.Fatalf("release does not encode: %v", err)
	}
	if r.HealthCheck.HTTPGet.Path != "/" || r.HealthCheck.FailureThreshold != 3 || r.Artifact.Unpack != "tar.gz" || r.Run.Env[0].Name != "X" {
		t.Fatalf("release defaults not applied: %+v %+v", r.HealthCheck, r.HealthCheck.HTTPGet)
	}
	other := r
	other.Artifact.SHA256 = strings.Repeat("f", 64)
	if err := ReleaseConflict(r, r); err != nil {
		t.Fatalf("same release conflicts: %v", err)
	}
	if err := ReleaseConflict(r, other); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("ReleaseConflict() = %v, want immutable", err)
	}

	p, err := Plan(Owner{Name: "rd", UID: "u1", Generation: 4}, s, Options{Paused: true}, 2, nil, Gates{}, "v1", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zklayout.Encode(&p); err != nil {
		t.Fatalf("plan does not encode: %v", err)
	}
	if p.Selector != "role=web" || p.FailurePolicy != "Pause" || !p.Paused || p.MinAvailable != 2 || p.PreviousVersion != "v1" || p.DependsOn[0] != "a" {
		t.Fatalf("plan = %+v", p)
	}
	q := p
	q.UpdatedAt = now.Add(time.Hour)
	q.Generation = 5
	if !SamePlan(p, q) {
		t.Fatal("plans differing only in time and generation are not the same")
	}
	q.Paused = false
	if SamePlan(p, q) {
		t.Fatal("plans differing in paused are the same")
	}
}

func TestPreviousVersion(t *testing.T) {
	cur := func(vs ...string) []zklayout.Current {
		var out []zklayout.Current
		for i, v := range vs {
			out = append(out, zklayout.Current{Node: string(rune('a' + i)), Version: v})
		}
		return out
	}
	tests := []struct {
		name   string
		old    *zklayout.Plan
		online []zklayout.Current
		want   string
	}{
		{name: "old plan other version", old: &zklayout.Plan{Version: "v1", PreviousVersion: "v0"}, want: "v1"},
		{name: "old plan same version keeps previous", old: &zklayout.Plan{Version: "v2", PreviousVersion: "v1"}, want: "v1"},
		{name: "most popular", online: cur("v1", "v0", "v1", "v2", "v2", "v2"), want: "v1"},
		{name: "tie: the agents' rule (highest)", online: cur("v1", "v0"), want: "v1"},
		{name: "all on target", online: cur("v2"), want: ""},
		{name: "nothing", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PreviousVersion(tt.old, "v2", tt.online); got != tt.want {
				t.Fatalf("PreviousVersion() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClaim(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	x := Claimant{Name: "x", UID: "ux", Created: t0}
	y := Claimant{Name: "y", UID: "uy", Created: t0.Add(time.Minute)}
	z := Claimant{Name: "z", UID: "uz", Created: t0.Add(2 * time.Minute)}
	xTwin := Claimant{Name: "w", UID: "uw", Created: t0} // same time, earlier name
	tests := []struct {
		name       string
		self       Claimant
		holder     *Claimant
		holderDone bool
		rivals     []Claimant
		granted    bool
		blocker    string
		msg        string
	}{
		{name: "nobody", self: y, granted: true},
		{name: "holds it", self: y, holder: &y, rivals: []Claimant{x}, granted: true},
		{name: "holder rolling", self: x, holder: &y, blocker: "y", msg: "being rolled out by RollingDeploy \"y\""},
		{name: "older waits", self: y, rivals: []Claimant{x}, blocker: "x", msg: "older and goes first"},
		{name: "same time by name", self: x, rivals: []Claimant{xTwin}, blocker: "w"},
		{name: "newer takes over from done holder", self: z, holder: &y, holderDone: true, granted: true},
		{name: "older never takes back", self: x, holder: &y, holderDone: true, blocker: "y", msg: "taken over"},
		{name: "earliest newer one first", self: z, holder: &x, holderDone: true, rivals: []Claimant{y, xTwin}, blocker: "y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Claim("s", tt.self, tt.holder, tt.holderDone, tt.rivals)
			if d.Granted != tt.granted {
				t.Fatalf("Granted = %v, want %v (%s)", d.Granted, tt.granted, d.Message)
			}
			if !tt.granted && d.Blocker.Name != tt.blocker {
				t.Fatalf("Blocker = %q, want %q", d.Blocker.Name, tt.blocker)
			}
			if !strings.Contains(d.Message, tt.msg) {
				t.Fatalf("Message = %q, want %q", d.Message, tt.msg)
			}
		})
	}
}

func TestDigestService(t *testing.T) {
	o := Observation{
		Service:      "a",
		Target:       "v2",
		Artifact:     v1alpha1.ArtifactSpec{URL: "https://example.com/a.tgz", SHA256: sha},
		MinAvailable: 3,
		Selected:     []string{"n5", "n1", "n2", "n3", "n4", "n6"},
		Current: []zklayout.Current{
			{Node: "n1", Version: "v2"}, {Node: "n2", Version: "v1"}, {Node: "n3", Version: "v1"},
		},
		CurrentUnreadable: []string{"n6"},
		Staged: []zklayout.Staged{
			{Node: "n4", Version: "v2", State: zklayout.StagedUpgrading},
			{Node: "n2", Version: "v2", State: zklayout.StagedReady},
		},
		Failures: []zklayout.Failure{
			{Node: "n3", Version: "v2", Kind: zklayout.FailureHealthCheck, Reason: "HTTP 500"},
			{Node: "n2", Version: "v1", Kind: zklayout.FailureHealthCheck, Reason: "old"},
		},
	}
	d := DigestService(o)
	st := d.Status
	if st.Total != 6 || st.Online != 4 || st.Updated != 1 || st.Staged != 2 || st.Upgrading != 1 || st.Failed != 1 || st.Unreachable != 1 {
		t.Fatalf("counts = %+v", st)
	}
	if !slices.Equal(st.UnreachableNodes, []string{"n5"}) || st.FailedNodes[0].Node != "n3" || d.Complete {
		t.Fatalf("digest = %+v", d)
	}
	Phase(&d, PhaseInput{})
	if d.Status.Phase != v1alpha1.PhaseFailed || !strings.Contains(d.Status.Message, "failed its health check on node n3") {
		t.Fatalf("phase = %s %q", d.Status.Phase, d.Status.Message)
	}

	tests := []struct {
		name      string
		current   []zklayout.Current
		staged    []zklayout.Staged
		failures  []zklayout.Failure
		in        PhaseInput
		phase     v1alpha1.Phase
		msg       string
		completed bool
	}{
		{name: "complete", current: []zklayout.Current{{Node: "n1", Version: "v2"}}, phase: v1alpha1.PhaseComplete, completed: true},
		{name: "upgrading is not complete", current: []zklayout.Current{{Node: "n1", Version: "v2"}},
			staged: []zklayout.Staged{{Node: "n2", Version: "v2", State: zklayout.StagedUpgrading}}, phase: v1alpha1.PhaseProgressing},
		{name: "paused", current: []zklayout.Current{{Node: "n1", Version: "v1"}}, in: PhaseInput{Paused: true}, phase: v1alpha1.PhasePaused},
		{name: "pending", current: []zklayout.Current{{Node: "n1", Version: "v1"}}, in: PhaseInput{WaitingFor: []string{"a"}}, phase: v1alpha1.PhasePending, msg: "waiting for a"},
		{name: "artifact", current: []zklayout.Current{{Node: "n1", Version: "v1"}},
			failures: []zklayout.Failure{{Node: "n1", Version: "v2", Kind: zklayout.FailureArtifact, Reason: "sha256 mismatch"}},
			phase:    v1alpha1.PhaseFailed, msg: "artifact https://example.com/a.tgz (sha256 " + sha + ") of b v2 failed on node n1: sha256 mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DigestService(Observation{Service: "b", Target: "v2", Artifact: o.Artifact, Selected: []string{"n1", "n2"},
				Current: tt.current, Staged: tt.staged, Queued: len(tt.staged), Failures: tt.failures})
			Phase(&d, tt.in)
			if d.Status.Phase != tt.phase || d.Complete != tt.completed || !strings.Contains(d.Status.Message, tt.msg) {
				t.Fatalf("phase = %s complete = %v message = %q", d.Status.Phase, d.Complete, d.Status.Message)
			}
		})
	}
}

func TestDigestReportsDistribution(t *testing.T) {
	three := 3
	d := DigestService(Observation{
		Service: "a", Target: "v2", MinAvailable: 1, Selected: []string{"n1", "n2", "n3", "n4"}, MinStaged: &three,
		Current: []zklayout.Current{{Node: "n1", Version: "v1"}, {Node: "n2", Version: "v1"}, {Node: "n3", Version: "v1"}},
		Staged:  []zklayout.Staged{{Node: "n1", Version: "v2", State: zklayout.StagedReady, PinnedBytes: 100}, {Node: "n2", Version: "v2", State: zklayout.StagedReady, PinnedBytes: 50}},
		Progress: []zklayout.Progress{
			{Node: "n3", Version: "v2", Done: 10, Total: 40, Source: zklayout.ProgressSourceOrigin},
			{Node: "n4", Version: "v1", Done: 1, Total: 2}, // an older download: not counted
		},
	})
	st := d.Status
	if st.StagedRequired != 3 || st.Staged != 2 || st.PinnedBytes != 150 || st.Downloading != 1 || st.DownloadingFromOrigin != 1 || st.DownloadedBytes != 10 || st.DownloadTotalBytes != 40 {
		t.Fatalf("status = %+v", st)
	}
	d = DigestService(Observation{Service: "a", Target: "v2", Current: []zklayout.Current{{Node: "n1", Version: "v1"}}})
	if d.Status.StagedRequired != 1 {
		t.Fatalf("default gate: every online node, got %d", d.Status.StagedRequired)
	}
}
