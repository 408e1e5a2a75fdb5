package nodestate

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func TestEntries(t *testing.T) {
	o := plan.Observation{
		Service: "a", Target: "v2",
		Selected: []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7"},
		Current: []zklayout.Current{
			{Node: "n1", Version: "v2"}, {Node: "n2", Version: "v1"}, {Node: "n3", Version: "v1"},
			{Node: "n4", Version: "v1"}, {Node: "n6", Version: "v1"}, {Node: "x9", Version: "v1"},
		},
		CurrentUnreadable: []string{"n7"},
		Staged: []zklayout.Staged{
			{Node: "n3", Version: "v2", State: zklayout.StagedReady},
			{Node: "n5", Version: "v2", State: zklayout.StagedUpgrading},
		},
		Progress: []zklayout.Progress{
			{Node: "n4", Version: "v2", Done: 57, Total: 100, Source: zklayout.ProgressSourceOrigin},
			{Node: "n1", Version: "v2", Done: 100, Total: 100},
		},
		Failures: []zklayout.Failure{
			{Node: "n6", Version: "v2", Kind: zklayout.FailureHealthCheck, Reason: "GET /healthz: <500>\n  internal   error"},
			{Node: "n2", Version: "v0", Kind: zklayout.FailureHealthCheck, Reason: "an older plan's"},
			{Node: "origin", Version: "v2", Kind: zklayout.FailureArtifact, Reason: "sha256 mismatch"},
		},
	}
	got := Entries(o)
	want := []v1alpha1.NodeEntry{
		{Name: "n1", Version: "v2", Online: true, State: v1alpha1.NodeUpdated},
		{Name: "n2", Version: "v1", Online: true, State: v1alpha1.NodeRunning},
		{Name: "n3", Version: "v1", Online: true, State: v1alpha1.NodeStaged},
		{Name: "n4", Version: "v1", Online: true, State: v1alpha1.NodeDownloading, DownloadedBytes: 55, TotalBytes: 100, Message: OriginMessage},
		{Name: "n5", Version: "v2", State: v1alpha1.NodeUpgrading},
		{Name: "n6", Version: "v1", Online: true, State: v1alpha1.NodeFailed, Message: "HealthCheck: GET /healthz: ?500? internal error"},
		{Name: "n7", Online: true, State: v1alpha1.NodeRunning, Message: "registration in ZooKeeper is unreadable"},
		{Name: "x9", Version: "v1", Online: true, State: v1alpha1.NodeRunning, Message: "not selected by the service's nodeSelector"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	o.Current = o.Current[1:] // n1 goes away
	if e := Entries(o)[0]; e.State != v1alpha1.NodeUnreachable || e.Online {
		t.Errorf("n1 offline: %+v", e)
	}
}

func TestShardNames(t *testing.T) {
	if got := ShardName("web", "a", 2); got != "web-a-2" {
		t.Errorf("ShardName = %q", got)
	}
	long := strings.Repeat("r", 253)
	a, b := ShardName(long, "a", 0), ShardName(long[:252]+"s", "a", 0)
	if len(a) > 253 || a == b || !strings.HasSuffix(a, "-a-0") {
		t.Errorf("long names: %q (%d), %q", a, len(a), b)
	}
	if l := Labels(long, "uid", "a"); l[v1alpha1.LabelRollingDeploy] != "" || l[v1alpha1.LabelRollingDeployUID] != "uid" {
		t.Errorf("labels of a long name: %v", l)
	}
}

// fleet is a service of n nodes with names of nameLen characters, in every state, with
// versions, messages and progress at their bounds when long is set.
func fleet(n, nameLen int, long bool) []v1alpha1.NodeEntry {
	o := plan.Observation{Service: "a", Target: "v2"}
	version := func(v string) string { return v }
	if long {
		version = func(v string) string { return v + strings.Repeat("9", 250) }
	}
	o.Target = version("v2")
	addr, zone, rack := "10.1.2.3:6881", "zone-a", "r12"
	if long {
		addr, zone, rack = strings.Repeat("a", 4096), strings.Repeat("z", 63), strings.Repeat("r", 63)
	}
	current := func(name, v string) zklayout.Current {
		return zklayout.Current{Node: name, Version: v, Address: addr, Since: time.Date(2026, 12, 5, 9, 30, 1, 123456789, time.UTC),
			Labels: map[string]string{v1alpha1.LabelZone: zone, v1alpha1.LabelRack: rack, "other": "x"}}
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s-%05d", strings.Repeat("n", nameLen-6), i)
		o.Selected = append(o.Selected, name)
		switch i % 5 {
		case 0:
			o.Current = append(o.Current, current(name, version("v1")))
			o.Failures = append(o.Failures, zklayout.Failure{Node: name, Version: o.Target, Kind: zklayout.FailureHealthCheck,
				Reason: strings.Repeat("<&\"é", 200)})
		case 1:
			o.Current = append(o.Current, current(name, version("v1")))
			o.Progress = append(o.Progress, zklayout.Progress{Node: name, Version: o.Target, Done: 1 << 61, Total: 1<<62 + 12345})
		case 2:
			o.Staged = append(o.Staged, zklayout.Staged{Node: name, Version: o.Target, State: zklayout.StagedUpgrading})
		case 3:
			o.Current = append(o.Current, current(name, o.Target))
		}
	}
	return Entries(o)
}

// TestShardSizeAt5000Nodes checks the object-size argument: 5,000 nodes fit in 5 shards, and
// every shard, serialized as the API server stores it, stays under 650 KB with every field at
// its bound (253-character names, versions, messages full of characters JSON escapes), and
// under 200 KB with 63-character names (a fifth of them failed, with an 80-character message).
func TestShardSizeAt5000Nodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nameLen int
		long    bool
		bound   int
	}{
		{"every field at its bound", 253, true, 1_000_000},
		{"63-character node names", 63, false, 300_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := fleet(5000, tc.nameLen, tc.long)
			shards := Shards(strings.Repeat("d", 253), "6f1c1a4e-8f9e-4a55-9d4c-0123456789ab", strings.Repeat("s", 63), entries[0].Version, entries)
			if len(shards) != 5 {
				t.Fatalf("%d shards, want 5", len(shards))
			}
			total := 0
			for i := range shards {
				s := &shards[i]
				s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "rollkeeper.io/v1alpha1", Kind: "RollingDeploy",
					Name: strings.Repeat("d", 253), UID: "6f1c1a4e-8f9e-4a55-9d4c-0123456789ab"}}
				s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "rollkeeper-manager", Operation: metav1.ManagedFieldsOperationUpdate,
					APIVersion: "rollkeeper.io/v1alpha1", Time: &metav1.Time{Time: time.Now()}, FieldsType: "FieldsV1",
					FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{".":{},"f:rollkeeper.io/rollingdeploy-uid":{},"f:rollkeeper.io/service":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"6f1c1a4e-8f9e-4a55-9d4c-0123456789ab\"}":{}}},"f:nodes":{},"f:rollingDeploy":{},"f:service":{},"f:shard":{},"f:shards":{},"f:targetVersion":{},"f:totalNodes":{}}`)}}}
				data, err := json.Marshal(s)
				if err != nil {
					t.Fatal(err)
				}
				if len(data) > tc.bound {
					t.Errorf("shard %d: %d bytes, bound %d", i, len(data), tc.bound)
				}
				if len(s.Nodes) > v1alpha1.MaxNodeSetEntries {
					t.Errorf("shard %d: %d entries", i, len(s.Nodes))
				}
				total += len(s.Nodes)
				t.Logf("shard %d: %d entries, %d bytes (%d per entry)", i, len(s.Nodes), len(data), len(data)/max(1, len(s.Nodes)))
			}
			if total != 5000 {
				t.Errorf("%d entries in all shards", total)
			}
		})
	}
}

func TestMergeAndSameContent(t *testing.T) {
	entries := fleet(2500, 20, false)
	shards := Shards("web", "uid", "a", "v2", entries)
	merged := Merge([]v1alpha1.RollingDeployNodeSet{shards[2], shards[0], shards[1]})
	if m := merged["a"]; m == nil || m.Incomplete || len(m.Nodes) != 2500 || m.Nodes[0].Name != entries[0].Name {
		t.Fatalf("merge of every shard: %+v", m)
	}
	if m := Merge(shards[:2])["a"]; !m.Incomplete {
		t.Error("a missing shard is not reported")
	}
	again := Shards("web", "uid", "a", "v2", fleet(2500, 20, false))
	if !SameContent(&shards[1], &again[1]) {
		t.Error("the same entries compare different")
	}
	// What the API server returns (times in seconds, decoded in the local zone) is the same.
	data, err := json.Marshal(&shards[1])
	if err != nil {
		t.Fatal(err)
	}
	var read v1alpha1.RollingDeployNodeSet
	if err := json.Unmarshal(data, &read); err != nil {
		t.Fatal(err)
	}
	if !SameContent(&read, &again[1]) {
		t.Error("a shard read back compares different")
	}
	again[1].Nodes[2].State = v1alpha1.NodeUpdated
	if SameContent(&shards[1], &again[1]) {
		t.Error("a changed entry compares equal")
	}
	again = Shards("web", "uid", "a", "v2", fleet(2500, 20, false))
	again[1].Nodes[0].Since = &metav1.Time{Time: again[1].Nodes[0].Since.Add(time.Second)}
	if SameContent(&shards[1], &again[1]) {
		t.Error("a changed Since compares equal")
	}
}

func TestEntriesTopology(t *testing.T) {
	since := time.Date(2026, 12, 5, 9, 30, 1, 999, time.FixedZone("x", 3600))
	o := plan.Observation{Service: "a", Target: "v2", Selected: []string{"n1", "n2"},
		Current: []zklayout.Current{{Node: "n1", Version: "v1", Address: "10.0.0.1:6881\n<x>", Since: since,
			Labels: map[string]string{v1alpha1.LabelZone: "eu-1a", v1alpha1.LabelRack: "r7"}}}}
	got := Entries(o)
	if e := got[0]; e.Address != "10.0.0.1:6881 ?x?" || e.Zone != "eu-1a" || e.Rack != "r7" ||
		e.Since == nil || !e.Since.Time.Equal(since.Truncate(time.Second)) {
		t.Errorf("n1: %+v", e)
	}
	if e := got[1]; e.Address != "" || e.Since != nil || e.Zone != "" {
		t.Errorf("unreachable n2 has registration details: %+v", e)
	}
}

// TestEntryBound checks the per-entry bound the shard size rests on: an entry with every field
// at its bound serializes to under 1,000 bytes, so MaxNodeSetEntries of them stay under 1 MB.
func TestEntryBound(t *testing.T) {
	e := v1alpha1.NodeEntry{Name: strings.Repeat("n", 253), Version: strings.Repeat("v", v1alpha1.MaxNodeVersionLength),
		Online: true, State: v1alpha1.NodeUnreachable, DownloadedBytes: 1<<63 - 1, TotalBytes: 1<<63 - 1,
		Message: clip(sanitize(strings.Repeat("x", 500)), v1alpha1.MaxNodeMessageLength),
		Address: clip(sanitize(strings.Repeat("a", 500)), v1alpha1.MaxNodeAddressLength),
		Since:   &metav1.Time{Time: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)},
		Zone:    strings.Repeat("z", v1alpha1.MaxNodeTopologyLength), Rack: strings.Repeat("r", v1alpha1.MaxNodeTopologyLength)}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)+1 > 1000 { // +1: the comma between entries
		t.Errorf("worst entry: %d bytes: %s", len(data), data)
	}
	t.Logf("worst entry: %d bytes", len(data))
}
