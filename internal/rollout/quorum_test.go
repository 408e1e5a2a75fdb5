package rollout

import (
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

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

// A decision's marks: every admitted node upgrading at the version and round, the others
// naming the decider; a mark that cannot be encoded fails the decision before any write.
func TestMarks(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	admit := []Admitted{{Node: "n1", Child: "n1-0000000001", ChildVersion: 2}, {Node: "n2", Child: "n2-0000000002", ChildVersion: 0}}
	marks, err := Marks("n1", "v2", admit, 7, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(marks) != 2 {
		t.Fatalf("%d marks for 2 admitted", len(marks))
	}
	for i, m := range marks {
		var st zklayout.Staged
		if err := zklayout.Decode(m.Data, &st); err != nil {
			t.Fatal(err)
		}
		wantBy := ""
		if i > 0 {
			wantBy = "n1"
		}
		if m.Admitted != admit[i] || st.Node != admit[i].Node || st.Version != "v2" || st.State != zklayout.StagedUpgrading ||
			st.RollCall != 7 || !st.Since.Equal(now) || st.AdmittedBy != wantBy {
			t.Fatalf("mark %d = %+v (%+v), want %s upgrading at v2 in round 7, admitted by %q", i, m.Admitted, st, admit[i].Node, wantBy)
		}
	}
	if _, err := Marks("n1", "not a version!", admit, 7, now); err == nil {
		t.Fatal("a mark with an invalid version was encoded")
	}
}
