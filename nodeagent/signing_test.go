package nodeagent_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
)

// A deploy entry is the operator's word that a service's turn has come: one it did not sign, at
// the head of the queue, lets no node upgrade, even with a signed plan and release behind it.
// Every node records a Signature failure naming the entry; once it is gone and a signed entry
// stands, the rollout goes through and the failures are cleared.
func TestUnsignedQueueHeadHoldsTheNodes(t *testing.T) {
	e := newEnv(t)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	e.signer = zksign.NewSigner(key)
	e.publish("web", "v1", "", 1, zklayout.FailurePolicyPause, nil)
	e.startAgents(3)
	e.waitFor("v1 everywhere", time.Minute, func() bool { return allOn(e.versions("web"), 3, "v1") })
	e.waitFor("v1's entry done", time.Minute, func() bool { return len(e.deployQueue()) == 0 })

	forged, err := zklayout.Encode(&zklayout.DeployEntry{Deploy: "test", Service: "web", Version: "v2"})
	must(t, err)
	head, err := e.zk.Create(e.ctx, e.layout.DeployPrefix("web"), forged, zkclient.PersistentSequential)
	must(t, err)
	e.noEntry = true
	e.publish("web", "v2", "v1", 1, zklayout.FailurePolicyPause, nil)
	for _, a := range e.agents {
		e.waitFor(a.name+" refused the head", time.Minute, func() bool {
			data, _, err := e.zk.Get(e.ctx, e.layout.Failure("web", a.name))
			var f zklayout.Failure
			return err == nil && zklayout.Decode(data, &f) == nil && f.Kind == zklayout.FailureSignature && strings.Contains(f.Reason, head)
		})
	}
	if vs := e.versions("web"); !allOn(vs, 3, "v1") {
		t.Fatalf("a node upgraded behind an unsigned queue head: %v", vs)
	}
	for _, a := range e.agents {
		if st := a.be.Status("web"); !st.Running || st.Version != "v1" {
			t.Fatalf("%s: %+v", a.name, st)
		}
	}

	must(t, e.zk.Delete(e.ctx, head, -1))
	_, err = e.zk.Create(e.ctx, e.layout.DeployPrefix("web"),
		e.encode(e.layout.DeployPrefix("web"), &zklayout.DeployEntry{Deploy: "test", Service: "web", Version: "v2"}), zkclient.PersistentSequential)
	must(t, err)
	e.waitFor("v2 everywhere", time.Minute, func() bool { return allOn(e.versions("web"), 3, "v2") })
	e.waitFor("Signature failures cleared", time.Minute, func() bool {
		names, _, err := e.zk.Children(e.ctx, e.layout.FailureService("web"))
		return err == nil && len(names) == 0 || errors.Is(err, zkclient.ErrNoNode)
	})
}
