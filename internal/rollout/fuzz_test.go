package rollout

import (
	"context"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zkmodel"
)

// FuzzReadNext feeds arbitrary bytes as the plan, a peer's registration, its staging child, a
// deploy entry and a failure record (everything the protocol reads from ZooKeeper, where
// anyone with write access may put anything), and reads and decides as the agent (node n1)
// and the operator (no node) do: nothing may panic, whatever the bytes.
func FuzzReadNext(f *testing.F) {
	must := func(p zklayout.Payload) []byte {
		data, err := zklayout.Encode(p)
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	f.Add(must(testPlan("v2")), must(&zklayout.Current{Node: "n2", Version: "v1", Health: zklayout.HealthHealthy, Labels: webLabels()}),
		must(&zklayout.Staged{Node: "n2", Version: "v2", State: zklayout.StagedReady}),
		must(&zklayout.DeployEntry{Deploy: "rd", Service: tSvc, Version: "v2", Generation: 1}),
		must(&zklayout.Failure{Node: "n2", Version: "v2", Kind: zklayout.FailureHealthCheck}), true)
	f.Add([]byte(`{"version":"v2","minAvailable":-3,"selector":"!!"}`), []byte(`{"node":"n1"}`), []byte("{"),
		[]byte(`{"service":"other","version":""}`), []byte(`null`), false)
	f.Add([]byte(" "), []byte{}, []byte{0xff}, []byte(`[]`), []byte(`{"node":"n9","kind":"Artifact"}`), true)
	f.Fuzz(func(t *testing.T, plan, reg, staged, entry, failure []byte, ephemeral bool) {
		const limit = 1 << 16 // the model holds what ZooKeeper's 1 MiB jute limit would allow; keep runs fast
		if len(plan)+len(reg)+len(staged)+len(entry)+len(failure) > limit {
			return
		}
		z := newZK(t, true)
		z.writePlan(plan)
		mode := zkmodel.Persistent
		if ephemeral {
			mode = zkmodel.Ephemeral
		}
		z.create(z.session("n2"), tLay.CurrentNode(tSvc, "n2"), reg, mode)
		z.register("n1", "v1")
		z.create(z.session("n2"), tLay.StagingPrefix(tSvc, "n2"), staged, zkmodel.EphemeralSequential)
		z.stage("n1", "v2", zklayout.StagedReady)
		z.create(z.op, tLay.DeployPrefix(tSvc), entry, zkmodel.PersistentSequential)
		z.failure("n2", failure)
		ctx := context.Background()
		for _, node := range []string{"n1", ""} {
			r := NewReader(z.client(), tLay, tSvc, node, nil)
			s, err := r.Read(ctx, 0)
			if err != nil {
				t.Fatalf("read as %q: %v", node, err) // the model has every path: no I/O error
			}
			l := local(z, "n1", "v1", "v1", "v2")
			st := Next(s, l)
			for tries := 0; st.Kind == StepRead && tries < 3; tries++ {
				if err := r.ReadMore(ctx, s, st.Need); err != nil {
					t.Fatalf("read more as %q: %v", node, err)
				}
				st = Next(s, l)
			}
			_, _ = Online(s.Current, s.Plan)
			if s.Plan != nil {
				target, _ := Target(s.Plan, s.Failures)
				_ = Done(s, target, s.Plan, NeedOnline(s.Plan.MinAvailable, 1))
			}
		}
	})
}
