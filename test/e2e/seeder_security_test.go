package e2e

import (
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// The operator's seeder admits only the peers registered in a version's swarm: the agents,
// which register before they dial it, are served. A file:// artifact has no web seed, so every
// byte comes from the seeder or from nodes that got it from the seeder.
func TestSeederServesItsSwarmOnly(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 3})
	deployV1(t, s, ctx, "a", service(t, s, "a", "v1", harness.FileURL(), harness.MinAvailable(2)))

	zk, err := s.ZK(ctx)
	must(t, err)
	_, meta, err := tracker.Tracker{ZK: zk, Layout: s.Layout}.Read(ctx, "a", "v1")
	must(t, err)
	mi, err := p2p.ParseMetaInfo(meta)
	must(t, err)
	if len(mi.WebSeeds) != 0 {
		t.Fatalf("a file:// artifact's torrent has web seeds %v: the nodes need not have used the seeder", mi.WebSeeds)
	}
}
