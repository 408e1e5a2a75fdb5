package rollout

import "testing"

func TestMayStop(t *testing.T) {
	for _, tc := range []struct {
		online, min int
		want        bool
	}{
		{5, 3, true}, {4, 3, true}, {3, 3, false}, {2, 3, false}, {1, 0, true}, {0, 0, false}, {20, 15, true}, {16, 15, true}, {15, 15, false},
	} {
		if got := MayStop(tc.online, tc.min); got != tc.want {
			t.Errorf("MayStop(%d, %d) = %v, want %v", tc.online, tc.min, got, tc.want)
		}
	}
}

func TestPredecessor(t *testing.T) {
	q := []string{"n3-0000000001", "n1-0000000004", "n2-0000000009"}
	for _, tc := range []struct {
		child, pred string
		found       bool
	}{
		{"n3-0000000001", "", true},
		{"n1-0000000004", "n3-0000000001", true},
		{"n2-0000000009", "n1-0000000004", true},
		{"n9-0000000002", "", false},
	} {
		if pred, found := Predecessor(q, tc.child); pred != tc.pred || found != tc.found {
			t.Errorf("Predecessor(%q) = %q, %v; want %q, %v", tc.child, pred, found, tc.pred, tc.found)
		}
	}
}

func TestMostPopular(t *testing.T) {
	for _, tc := range []struct {
		name      string
		versions  []string
		preferred string
		want      string
		ok        bool
	}{
		{"majority", []string{"v1", "v1", "v2"}, "v2", "v1", true},
		{"tie goes to preferred", []string{"v1", "v2"}, "v2", "v2", true},
		{"tie without preferred is deterministic", []string{"v1", "v3"}, "v2", "v3", true},
		{"nobody online: preferred", nil, "v2", "v2", true},
		{"nothing at all", nil, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := MostPopular(tc.versions, tc.preferred)
			if got != tc.want || ok != tc.ok {
				t.Errorf("MostPopular = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
