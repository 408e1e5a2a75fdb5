package rollout

import (
	"fmt"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func TestCompleteNeedsOnlineNodes(t *testing.T) {
	on := func(vs ...string) []zklayout.Current {
		var out []zklayout.Current
		for i, v := range vs {
			out = append(out, zklayout.Current{Node: fmt.Sprintf("n%d", i), Version: v})
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		current  []zklayout.Current
		queued   int
		min, sel int
		want     bool
		failed   map[string]bool
	}{
		{"nobody registered yet", nil, 0, 3, 5, false, nil},
		{"below quorum on target", on("v2", "v2"), 0, 3, 5, false, nil},
		{"quorum on target, two unreachable", on("v2", "v2", "v2"), 0, 3, 5, true, nil},
		{"one still on old", on("v2", "v2", "v1"), 0, 2, 3, false, nil},
		{"someone queued or upgrading", on("v2", "v2"), 1, 1, 3, false, nil},
		{"quorum 0 still needs one", nil, 0, 0, 2, false, nil},
		{"no nodes selected", nil, 0, 0, 0, true, nil},
		{"one on old, its failure tolerated", on("v2", "v2", "v1"), 0, 2, 3, true, map[string]bool{"n2": true}},
		{"one on old, another's failure tolerated", on("v2", "v2", "v1"), 0, 2, 3, false, map[string]bool{"n1": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Complete("v2", tc.current, 0, tc.queued, NeedOnline(tc.min, tc.sel), tc.failed); got != tc.want {
				t.Errorf("Complete = %v, want %v", got, tc.want)
			}
		})
	}
}
