package dryrun

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// ns builds online nodes from "name" or "name@domain"; a trailing "*" marks a node on the target.
func ns(specs ...string) []Node {
	var out []Node
	for _, s := range specs {
		n := Node{}
		if strings.HasSuffix(s, "*") {
			n.OnTarget, s = true, strings.TrimSuffix(s, "*")
		}
		n.Name, n.Domain, _ = strings.Cut(s, "@")
		out = append(out, n)
	}
	return out
}

// render writes waves as "domain:a,b|domain:c" ("" domain: no prefix).
func render(ws []Wave) string {
	var parts []string
	for _, w := range ws {
		p := strings.Join(w.Nodes, ",")
		if w.Domain != "" {
			p = w.Domain + ":" + p
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "|")
}

func TestWaves(t *testing.T) {
	zone := func(per int, domains ...zklayout.DomainQuorum) *zklayout.Topology {
		return &zklayout.Topology{Key: "zone", MaxUnavailablePerDomain: per, Domains: domains}
	}
	for _, tc := range []struct {
		name    string
		in      Input
		waves   string
		size    int
		skipped []string
		noRoom  string
		blocked *Blocked
		held    []string
	}{
		{name: "the quorum alone: room 2 of 5, by name",
			in:    Input{Online: ns("n5", "n3", "n1", "n2", "n4"), MinAvailable: 3},
			waves: "n1,n2|n3,n4|n5", size: 2},
		{name: "maxUnavailable caps below the room",
			in:    Input{Online: ns("n1", "n2", "n3", "n4", "n5"), MinAvailable: 1, MaxUnavailable: 2},
			waves: "n1,n2|n3,n4|n5", size: 2},
		{name: "the room caps below maxUnavailable",
			in:    Input{Online: ns("n1", "n2", "n3", "n4"), MinAvailable: 3, MaxUnavailable: 3},
			waves: "n1|n2|n3|n4", size: 1},
		{name: "no quorum, no cap: everything at once",
			in:    Input{Online: ns("n1", "n2", "n3")},
			waves: "n1,n2,n3", size: 3},
		{name: "nodes on the target are skipped but count online",
			in:    Input{Online: ns("n1*", "n2", "n3*", "n4"), MinAvailable: 3},
			waves: "n2|n4", size: 1, skipped: []string{"n1", "n3"}},
		{name: "every node on the target: nothing to do, even without room",
			in:      Input{Online: ns("n2*", "n1*"), MinAvailable: 2},
			skipped: []string{"n1", "n2"}},
		{name: "no room",
			in:     Input{Online: ns("n1", "n2", "n3"), MinAvailable: 3},
			noRoom: "no wave: minAvailable 3 leaves no room with 3 online"},
		{name: "no room: fewer online than the quorum",
			in:     Input{Online: ns("n1", "n2*"), MinAvailable: 3, MaxUnavailable: 1},
			noRoom: "no wave: minAvailable 3 leaves no room with 2 online", skipped: []string{"n2"}},
		{name: "topology: one domain at a time in name order, the unlabelled first",
			in:    Input{Online: ns("c1@zone-b", "a2@zone-a", "a1@zone-a", "b1@zone-b", "u1", "a3@zone-a"), MinAvailable: 2, Topology: zone(2)},
			waves: "u1|zone-a:a1,a2|zone-a:a3|zone-b:b1,c1", size: 2},
		{name: "topology: maxUnavailablePerDomain 0 means 1 (the schema's default)",
			in:    Input{Online: ns("a1@a", "a2@a", "b1@b"), Topology: zone(0)},
			waves: "a:a1|a:a2|b:b1", size: 1},
		{name: "topology under maxUnavailable and the room",
			in:    Input{Online: ns("a1@a", "a2@a", "a3@a", "a4@a", "b1@b"), MinAvailable: 2, MaxUnavailable: 2, Topology: zone(5)},
			waves: "a:a1,a2|a:a3,a4|b:b1", size: 2},
		{name: "topology: a domain's quorum narrows its waves",
			in: Input{Online: ns("a1@a", "a2@a", "a3@a", "b1@b", "b2@b"), Topology: zone(3,
				zklayout.DomainQuorum{Name: "a", MinAvailable: 2}, zklayout.DomainQuorum{Name: "b", MinAvailable: 0})},
			waves: "a:a1|a:a2|a:a3|b:b1,b2", size: 3},
		{name: "topology: a domain with no room blocks it and holds the later ones",
			in: Input{Online: ns("a1@a", "a2@a", "b1@b", "c1@c", "c2@c", "d1@d*"), MinAvailable: 1, Topology: zone(1,
				zklayout.DomainQuorum{Name: "a", MinAvailable: 1}, zklayout.DomainQuorum{Name: "b", MinAvailable: 1})},
			waves: "a:a1|a:a2", size: 1, skipped: []string{"d1"},
			blocked: &Blocked{Domain: "b", Online: 1, MinAvailable: 1, Nodes: []string{"b1"}}, held: []string{"c1", "c2"}},
		{name: "topology: a domain whose nodes are all on the target is no wave and blocks nothing",
			in: Input{Online: ns("a1@a*", "b1@b", "b2@b"), Topology: zone(1,
				zklayout.DomainQuorum{Name: "a", MinAvailable: 1})},
			waves: "b:b1|b:b2", size: 1, skipped: []string{"a1"}},
		{name: "topology: the node on the target keeps its domain's quorum",
			in: Input{Online: ns("a1@a*", "a2@a"), Topology: zone(1,
				zklayout.DomainQuorum{Name: "a", MinAvailable: 1})},
			waves: "a:a2", size: 1, skipped: []string{"a1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Waves(tc.in)
			if got := render(r.Waves); got != tc.waves {
				t.Errorf("waves %q, want %q", got, tc.waves)
			}
			if r.Size != tc.size {
				t.Errorf("size %d, want %d", r.Size, tc.size)
			}
			if !reflect.DeepEqual(r.Skipped, tc.skipped) {
				t.Errorf("skipped %v, want %v", r.Skipped, tc.skipped)
			}
			if r.NoRoom != tc.noRoom {
				t.Errorf("noRoom %q, want %q", r.NoRoom, tc.noRoom)
			}
			if !reflect.DeepEqual(r.Blocked, tc.blocked) {
				t.Errorf("blocked %+v, want %+v", r.Blocked, tc.blocked)
			}
			if !reflect.DeepEqual(r.Held, tc.held) {
				t.Errorf("held %v, want %v", r.Held, tc.held)
			}
			if want := len(tc.held); tc.blocked != nil {
				if p := r.Pending(); p != want+len(tc.blocked.Nodes) {
					t.Errorf("pending %d, want %d", p, want+len(tc.blocked.Nodes))
				}
			}
		})
	}
}

// Waves must not change its input, whose order the caller may rely on.
func TestWavesLeavesItsInputAlone(t *testing.T) {
	in := ns("n2", "n1")
	Waves(Input{Online: in})
	if in[0].Name != "n2" {
		t.Fatalf("input reordered: %+v", in)
	}
}

func TestWaveTime(t *testing.T) {
	at := func(secs ...int) []time.Time {
		var out []time.Time
		base := time.Date(2026, 5, 4, 3, 0, 0, 0, time.UTC)
		for _, s := range secs {
			out = append(out, base.Add(time.Duration(s)*time.Second))
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		since  []time.Time
		median time.Duration
		gaps   int
	}{
		{"nothing", nil, 0, 0},
		{"one node", at(5), 0, 0},
		{"all in the same second", at(5, 5, 5), 0, 0},
		{"one at a time, unsorted, a late node", at(16, 0, 8, 500, 24), 8 * time.Second, 4},
		{"waves of two: same-second pairs left out", at(0, 0, 10, 10, 22, 22), 11 * time.Second, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, n := WaveTime(tc.since)
			if m != tc.median || n != tc.gaps {
				t.Fatalf("WaveTime = %s over %d gaps, want %s over %d", m, n, tc.median, tc.gaps)
			}
		})
	}
}

func TestWavesCanary(t *testing.T) {
	var online []Node
	for _, n := range []string{"n1", "n2", "n3", "n4", "n5", "n6"} {
		online = append(online, Node{Name: n})
	}
	r := Waves(Input{Online: online, MinAvailable: 2, MaxUnavailable: 3, Canary: 2})
	var got []string
	for _, w := range r.Waves {
		got = append(got, strings.Join(w.Nodes, ","))
	}
	if strings.Join(got, " | ") != "n1,n2 | n3 | n4,n5,n6" || r.CanaryWaves != 1 {
		t.Fatalf("waves %q, canary waves %d; want the first wave cut at the 2 canaries", got, r.CanaryWaves)
	}
	r = Waves(Input{Online: online, MinAvailable: 5, Canary: 3})
	if len(r.Waves) != 6 || r.CanaryWaves != 3 {
		t.Fatalf("one at a time, 3 canaries: %d waves, canary waves %d", len(r.Waves), r.CanaryWaves)
	}
}
