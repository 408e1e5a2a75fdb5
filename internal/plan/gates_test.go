package plan

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func ios(v intstr.IntOrString) *intstr.IntOrString { return &v }

func TestStrategyMergesFieldByField(t *testing.T) {
	spec := v1alpha1.RollingDeploySpec{Strategy: &v1alpha1.StrategySpec{
		MaxUnavailable:     ios(intstr.FromInt32(3)),
		Topology:           &v1alpha1.TopologySpec{Key: "zone"},
		MaintenanceWindows: []v1alpha1.MaintenanceWindow{{Start: "02:00", End: "04:00"}},
	}}
	own := v1alpha1.ServiceSpec{Strategy: &v1alpha1.StrategySpec{MaxUnavailable: ios(intstr.FromInt32(1))}}
	got := Strategy(spec, own)
	if got.MaxUnavailable.IntValue() != 1 || got.Topology == nil || len(got.MaintenanceWindows) != 1 {
		t.Fatalf("merged %+v", got)
	}
	// An empty list of windows in the service says: none for it.
	own.Strategy.MaintenanceWindows = []v1alpha1.MaintenanceWindow{}
	if got := Strategy(spec, own); len(got.MaintenanceWindows) != 0 {
		t.Fatalf("windows %v, want none", got.MaintenanceWindows)
	}
	if got := Strategy(v1alpha1.RollingDeploySpec{}, v1alpha1.ServiceSpec{}); got.MaxUnavailable != nil || got.Topology != nil {
		t.Fatalf("no strategy: %+v", got)
	}
}

func TestResolveGates(t *testing.T) {
	nodes := []map[string]string{{"zone": "a"}, {"zone": "a"}, {"zone": "a"}, {"zone": "b"}, {"zone": "b"}, {}}
	g, err := ResolveGates(v1alpha1.StrategySpec{
		MaxUnavailable: ios(intstr.FromString("40%")),
		Topology:       &v1alpha1.TopologySpec{Key: "zone", MinAvailablePerDomain: ios(intstr.FromString("50%"))},
		MaintenanceWindows: []v1alpha1.MaintenanceWindow{
			{Days: []v1alpha1.Weekday{"Sat"}, Start: "22:00", End: "02:00"},
		},
	}, nodes)
	if err != nil {
		t.Fatal(err)
	}
	// 40% of 6 is 2.4: 2. Per zone, 50% rounded up: a 2 of 3, b 1 of 2, the unlabelled 1 of 1.
	if g.MaxUnavailable != 2 || g.Topology.MaxUnavailablePerDomain != 1 {
		t.Fatalf("gates %+v", g)
	}
	want := []zklayout.DomainQuorum{{Name: "", MinAvailable: 1}, {Name: "a", MinAvailable: 2}, {Name: "b", MinAvailable: 1}}
	if len(g.Topology.Domains) != 3 || g.Topology.Domains[0] != want[0] || g.Topology.Domains[1] != want[1] || g.Topology.Domains[2] != want[2] {
		t.Fatalf("domains %+v, want %+v", g.Topology.Domains, want)
	}
	if len(g.Windows) != 1 || g.Windows[0].TimeZone != "UTC" || g.Windows[0].Days[0] != "Sat" {
		t.Fatalf("windows %+v", g.Windows)
	}
	// A small percentage still lets one node go.
	if g, _ := ResolveGates(v1alpha1.StrategySpec{MaxUnavailable: ios(intstr.FromString("1%"))}, nodes); g.MaxUnavailable != 1 {
		t.Fatalf("1%% of 6: %d, want 1", g.MaxUnavailable)
	}
	// A per-domain quorum larger than a domain.
	if _, err := ResolveGates(v1alpha1.StrategySpec{Topology: &v1alpha1.TopologySpec{Key: "zone", MinAvailablePerDomain: ios(intstr.FromInt32(3))}}, nodes); err == nil ||
		!strings.Contains(err.Error(), `domain "b"`) {
		t.Fatalf("err %v", err)
	}
}

func TestValidateStrategy(t *testing.T) {
	spec := validSpecForGates()
	spec.Strategy = &v1alpha1.StrategySpec{
		Topology:           &v1alpha1.TopologySpec{Key: "bad key"},
		MaintenanceWindows: []v1alpha1.MaintenanceWindow{{Start: "02:00", End: "04:00", TimeZone: "Mars/Olympus_Mons"}},
	}
	err := Validate(spec)
	if err == nil || !strings.Contains(err.Error(), "topology.key") || !strings.Contains(err.Error(), "Mars/Olympus_Mons") {
		t.Fatalf("err %v", err)
	}
}

func validSpecForGates() v1alpha1.RollingDeploySpec {
	return v1alpha1.RollingDeploySpec{Services: []v1alpha1.ServiceSpec{{
		Name: "a", Version: "v1", Quorum: v1alpha1.QuorumSpec{MinAvailable: intstr.FromInt32(1)},
		Artifact: v1alpha1.ArtifactSpec{URL: "https://x/a", SHA256: strings.Repeat("a", 64)},
		Run:      v1alpha1.RunSpec{Command: []string{"a"}},
	}}}
}

// The operator's status applies the agents' gates to what it read.
func TestDigestGateWait(t *testing.T) {
	zone := func(z string) map[string]string { return map[string]string{"zone": z} }
	p := &zklayout.Plan{Version: "v2", Topology: &zklayout.Topology{Key: "zone", MaxUnavailablePerDomain: 1}}
	o := Observation{Service: "a", Target: "v2", Selected: []string{"n1", "n2", "n3"}, Plan: p, Now: time.Now(),
		Current: []zklayout.Current{{Node: "n2", Version: "v1", Labels: zone("b")}, {Node: "n3", Version: "v1", Labels: zone("b")}},
		Staged: []zklayout.Staged{
			{Node: "n1", Version: "v2", State: zklayout.StagedUpgrading, Domain: "a"},
			{Node: "n2", Version: "v2", State: zklayout.StagedReady, Domain: "b"},
		}}
	d := DigestService(o)
	Phase(&d, PhaseInput{})
	if d.Status.Gate != "domain" || d.Status.Waiting != "a has 1 node(s) down; one domain at a time" ||
		!strings.Contains(d.Status.Message, "waiting: a has 1 node(s) down") {
		t.Fatalf("status %+v", d.Status)
	}
	// Nobody queued, a window closed: it is reported, with when it opens.
	o.Staged, p.Topology = nil, nil
	p.Windows = []zklayout.Window{{Start: "02:00", End: "03:00", TimeZone: "UTC"}}
	o.Now = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	d = DigestService(o)
	if d.Status.Gate != "window" || d.Status.Waiting != "window opens at 02:00 UTC" || !d.GateOpens.Equal(time.Date(2026, 12, 6, 2, 0, 0, 0, time.UTC)) {
		t.Fatalf("status %+v opens %v", d.Status, d.GateOpens)
	}
}
