package seeder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// The seeder serves a version only to the peers registered in its swarm: a node registered for
// it downloads; an address registered nowhere is refused; once its entry is gone, the address
// is refused too.
func TestSeederAdmitsOnlyItsSwarm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A file:// origin: no web seed in the metainfo, so the seeder is the only source.
	root := t.TempDir()
	body := bytes.Repeat([]byte("rollkeeper swarm "), 64<<10)
	sum := sha256.Sum256(body)
	if err := os.WriteFile(filepath.Join(root, "a.bin"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	allowed := make(chan []string)
	e := newEnvOpts(t, ctx, OriginPolicy{FileRoots: []string{root}}, testr.New(t), nil, func(s *Seeder) {
		s.swarmChanged = func(_ string, peers []p2p.Peer) {
			var addrs []string
			for _, p := range peers {
				addrs = append(addrs, p.Addr)
			}
			select {
			case allowed <- addrs:
			case <-ctx.Done():
			}
		}
	})
	waitAllowed := func(want ...string) {
		t.Helper()
		for {
			select {
			case got := <-allowed:
				if slices.Equal(got, want) {
					return
				}
				t.Logf("seeder admits %v; waiting for %v", got, want)
			case <-ctx.Done():
				t.Fatalf("the seeder never admitted exactly %v", want)
			}
		}
	}
	rel := &zklayout.Release{Service: "a", Version: "v1",
		Artifact: zklayout.Artifact{URL: "file://" + filepath.Join(root, "a.bin"), SHA256: hex.EncodeToString(sum[:]), Unpack: zklayout.UnpackNone}}
	for st := e.sd.Ensure(rel); !st.Ready; st = e.sd.Ensure(rel) {
		if st.Err != nil && st.Permanent {
			t.Fatal(st.Err)
		}
		e.waitChange(t, ctx)
	}
	_, meta, err := e.tr.Read(ctx, "a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	mi, err := p2p.ParseMetaInfo(meta)
	if err != nil {
		t.Fatal(err)
	}
	seeder := []p2p.Peer{{Addr: e.cl.Addr()}}
	// node is an agent's client: it admits only listed peers too.
	node := func(host string) *p2p.Client {
		c, err := p2p.New(p2p.Config{DataDir: t.TempDir(), ListenHost: host, OnlyListedPeers: true, Logger: testr.New(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	// Registered in the swarm: served.
	listed := node("127.0.0.2")
	unregister, err := e.tr.Register(ctx, mi.InfoHash, zklayout.Peer{Node: "node-1", Host: "127.0.0.2", Port: listed.ListenPort()})
	if err != nil {
		t.Fatal(err)
	}
	waitAllowed(listed.Addr())
	lt, err := listed.Download(ctx, mi, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := lt.AddPeers(seeder); err != nil {
		t.Fatal(err)
	}
	if err := lt.Wait(ctx); err != nil {
		t.Fatalf("registered node: %v", err)
	}
	if got, err := artifact.FileDigest(lt.Path()); err != nil || got != rel.Artifact.SHA256 {
		t.Fatalf("registered node got sha256 %s, %v", got, err)
	}

	// Registered nowhere: refused before any piece.
	refuse := func(c *p2p.Client) {
		t.Helper()
		refused := e.cl.RefusedConns()
		tor, err := c.Download(ctx, mi, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := tor.AddPeers(seeder); err != nil {
			t.Fatal(err)
		}
		if err := e.cl.WaitRefused(ctx, refused); err != nil {
			t.Fatalf("%s: %v", c.Addr(), err)
		}
		if st := tor.Stats(); st.BytesReadData != 0 || st.PiecesDone != 0 || tor.Complete() {
			t.Fatalf("%s received data from the seeder: %+v", c.Addr(), st)
		}
		tor.Drop()
	}
	refuse(node("127.0.0.3"))

	// Its entry gone (the node left, or its session ended): its address is refused from then on.
	if err := unregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitAllowed()
	lt.Drop()
	refuse(node("127.0.0.2"))
}
