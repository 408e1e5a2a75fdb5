package canstop

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// fleet is n nodes node-1..node-n, online unless listed in down (name to state).
func fleet(n int, down map[string]v1alpha1.NodeState) []v1alpha1.NodeEntry {
	var out []v1alpha1.NodeEntry
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node-%d", i)
		e := v1alpha1.NodeEntry{Name: name, Version: "v1", Online: true, State: v1alpha1.NodeRunning}
		if st, ok := down[name]; ok {
			e.Online, e.State = false, st
		}
		out = append(out, e)
	}
	return out
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name    string
		min     int
		nodes   []v1alpha1.NodeEntry
		node    string
		yes     bool
		online  int
		reason  []string
		wantErr string
	}{
		{name: "room to spare", min: 3, nodes: fleet(5, nil), node: "node-3", yes: true, online: 5,
			reason: []string{"online 5, minAvailable 3: stopping node-3 leaves 4 ≥ 3"}},
		{name: "exactly at the floor after the stop", min: 4, nodes: fleet(5, nil), node: "node-3", yes: true, online: 5,
			reason: []string{"leaves 4 ≥ 4"}},
		{name: "quorum equals the node count", min: 5, nodes: fleet(5, nil), node: "node-1", online: 5,
			reason: []string{"online 5, minAvailable 5: stopping node-1 would leave 4 < 5"}},
		{name: "others already down", min: 3,
			nodes: fleet(5, map[string]v1alpha1.NodeState{"node-4": v1alpha1.NodeUpgrading, "node-5": v1alpha1.NodeUnreachable}),
			node:  "node-1", online: 3,
			reason: []string{"would leave 2 < 3", "already down: node-4 (Upgrading), node-5 (Unreachable)"}},
		{name: "the node is already down", min: 5,
			nodes: fleet(5, map[string]v1alpha1.NodeState{"node-2": v1alpha1.NodeUnreachable}), node: "node-2", yes: true, online: 4,
			reason: []string{"node-2 is already down (not counted online): online 4, minAvailable 5"}},
		{name: "the node and another are down", min: 1,
			nodes: fleet(5, map[string]v1alpha1.NodeState{"node-2": v1alpha1.NodeUnreachable, "node-4": v1alpha1.NodeUpgrading}), node: "node-2", yes: true, online: 3,
			reason: []string{"node-2 is already down", "; already down: node-4 (Upgrading)"}},
		{name: "unknown node", min: 1, nodes: fleet(2, nil), node: "node-9", wantErr: "not a node of service a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Decide(Input{Deploy: "web", Service: "a", Node: tc.node, MinAvailable: tc.min, Nodes: tc.nodes})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Yes != tc.yes || v.Online != tc.online {
				t.Errorf("yes=%t online=%d, want yes=%t online=%d (%s)", v.Yes, v.Online, tc.yes, tc.online, v.Reason)
			}
			for _, r := range tc.reason {
				if !strings.Contains(v.Reason, r) {
					t.Errorf("reason %q lacks %q", v.Reason, r)
				}
			}
		})
	}
}

func TestDownListIsBounded(t *testing.T) {
	down := map[string]v1alpha1.NodeState{}
	for i := 1; i <= 15; i++ {
		down[fmt.Sprintf("node-%d", i)] = v1alpha1.NodeUnreachable
	}
	v, err := Decide(Input{Service: "a", Node: "node-20", MinAvailable: 1, Nodes: fleet(20, down)})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Yes || !strings.HasSuffix(v.Reason, "and 5 more") || len(v.Down) != 15 {
		t.Errorf("yes=%t down=%d reason %q", v.Yes, len(v.Down), v.Reason)
	}
}
