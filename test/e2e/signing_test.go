package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// waitFailure waits (on watches) until failures/<svc>/<node> is a Signature failure whose
// reason names znode.
func waitFailure(ctx context.Context, c *zkclient.Client, l zklayout.Layout, svc, node, znode string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	p := l.Failure(svc, node)
	last := "none"
	for {
		ok, _, w, err := c.ExistsW(ctx, p)
		if err != nil {
			return fmt.Errorf("%s (last: %s): %w", p, last, err)
		}
		var data []byte
		if ok {
			// The exists watch fires on the data's changes as well.
			if data, _, err = c.Get(ctx, p); err != nil && !errors.Is(err, zkclient.ErrNoNode) {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		var f zklayout.Failure
		if data != nil && zklayout.Decode(data, &f) == nil {
			last = f.Kind + ": " + f.Reason
			if f.Kind == zklayout.FailureSignature && strings.Contains(f.Reason, znode) {
				return nil
			}
		}
		if err := w.Wait(ctx); err != nil {
			return fmt.Errorf("waiting for a Signature failure naming %s in %s (last: %s): %w", znode, p, last, err)
		}
	}
}

// With signatures (the default), write access to ZooKeeper, here rollkeeper's own
// credentials as every node holds them, no longer runs anything on the nodes: a plan and a
// release signed with another key, or not signed at all, are refused by every agent, which
// records a Signature failure naming the znode and keeps its service as it is. The operator,
// back, rewrites what it owns and the nodes recover.
func TestUnsignedOrForeignSignedZnodesAreRefused(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 2})
	deployV1(t, s, ctx, "web", service(t, s, "a", "v1"))
	port := mustPort(t, s, "a")
	must(t, s.Operator.Stop(10*time.Second)) // nothing repairs the attacker's writes meanwhile

	c, err := s.ZK(ctx)
	must(t, err)
	l := s.Layout
	keyFile, _, err := harness.WriteSigningKey(t.TempDir(), "foreign")
	must(t, err)
	foreign, err := zksign.LoadSigner(keyFile)
	must(t, err)
	marker := filepath.Join(t.TempDir(), "pwned")
	evil := zklayout.Run{Command: []string{"/bin/sh", "-c", "touch " + marker + "; exec sleep 1000"}}

	// Service a: a plan for v666 and its release, signed with a key nobody trusts.
	data, st, err := c.Get(ctx, l.StagingService("a"))
	must(t, err)
	var plan zklayout.Plan
	must(t, zklayout.Decode(data, &plan))
	data, _, err = c.Get(ctx, l.Release("a", "v1"))
	must(t, err)
	var rel zklayout.Release
	must(t, zklayout.Decode(data, &rel))
	rel666 := rel
	rel666.Version, rel666.Run = "v666", evil
	signed, err := foreign.Encode(l.Release("a", "v666"), &rel666)
	must(t, err)
	_, err = c.Create(ctx, l.Release("a", "v666"), signed, zkclient.Persistent)
	must(t, err)
	plan666 := plan
	plan666.Version, plan666.PreviousVersion = "v666", "v1"
	signed, err = foreign.Encode(l.StagingService("a"), &plan666)
	must(t, err)
	_, err = c.Set(ctx, l.StagingService("a"), signed, st.Version)
	must(t, err)
	// Service evil, not running anywhere: an unsigned plan and release (before signatures,
	// every selected node started it at once, without waiting for any queue).
	relEvil := rel666
	relEvil.Service, relEvil.Version = "evil", "v1"
	unsigned, err := zklayout.Encode(&relEvil)
	must(t, err)
	must(t, c.EnsurePath(ctx, l.ReleaseService("evil")))
	_, err = c.Create(ctx, l.Release("evil", "v1"), unsigned, zkclient.Persistent)
	must(t, err)
	planEvil := plan
	planEvil.Service, planEvil.Version, planEvil.PreviousVersion = "evil", "v1", ""
	unsigned, err = zklayout.Encode(&planEvil)
	must(t, err)
	_, err = c.Create(ctx, l.StagingService("evil"), unsigned, zkclient.Persistent)
	must(t, err)

	for _, n := range s.Nodes {
		must(t, waitFailure(ctx, c, l, "a", n.Name, l.StagingService("a")))
		must(t, waitFailure(ctx, c, l, "evil", n.Name, l.StagingService("evil")))
	}
	vers, err := s.ServiceVersions(ctx, "a")
	must(t, err)
	for node, v := range vers {
		if v != "v1" {
			t.Errorf("%s serves a %s after a foreign-signed plan", node, v)
		}
	}
	if names, _, err := c.Children(ctx, l.CurrentService("evil")); err == nil && len(names) > 0 {
		t.Errorf("evil runs on %v", names)
	}

	// A node coming back starts the most popular version, v1, whose release was rewritten
	// unsigned with the attacker's command: it refuses the release and starts nothing.
	n1 := s.Node(1)
	must(t, n1.Stop())
	data, st, err = c.Get(ctx, l.Release("a", "v1"))
	must(t, err)
	tampered := rel
	tampered.Run = evil
	unsigned, err = zklayout.Encode(&tampered)
	must(t, err)
	_, err = c.Set(ctx, l.Release("a", "v1"), unsigned, st.Version)
	must(t, err)
	must(t, n1.Start())
	must(t, waitFailure(ctx, c, l, "a", n1.Name, l.Release("a", "v1")))
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the attacker's command ran")
	}
	if ok, err := c.Exists(ctx, l.CurrentNode("a", n1.Name)); err != nil || ok {
		t.Fatalf("node-1 registered a from a tampered release (exists %v, err %v)", ok, err)
	}

	// The operator rewrites the plan and the release it owns (signed); node-1 starts v1 again
	// and every node clears its Signature failure.
	must(t, s.StartOperator())
	must(t, s.WaitForServiceVersions(ctx, "a", "v1", rolloutTime))
	must(t, harness.WaitFor(ctx, time.Minute, "Signature failures of a cleared", func(ctx context.Context) (bool, error) {
		names, _, err := c.Children(ctx, l.FailureService("a"))
		return len(names) == 0, err
	}))
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the attacker's command ran")
	}
	if _, _, err := n1.Get(ctx, port, "/"); err != nil {
		t.Fatalf("node-1 does not serve a: %v", err)
	}
}

// A key rotation without a stop: the agents trust the old and the new key, the operator
// restarts with the new one and re-signs what the old one signed, the old key is dropped; no
// node refuses anything, a node restarted afterwards adopts its service, and the next rollout
// runs on the new key alone.
func TestSigningKeyRotation(t *testing.T) {
	s, ctx := start(t, harness.Config{Nodes: 2})
	deployV1(t, s, ctx, "web", service(t, s, "a", "v1"))
	c, err := s.ZK(ctx)
	must(t, err)
	l := s.Layout
	dir := t.TempDir()
	newKey, newPub, err := harness.WriteSigningKey(dir, "next")
	must(t, err)
	oldPub, err := os.ReadFile(s.TrustedKeysFile)
	must(t, err)
	newPubPEM, err := os.ReadFile(newPub)
	must(t, err)
	next, err := zksign.LoadSigner(newKey)
	must(t, err)

	// 1. Agents trust both keys (they read the file again when it changes).
	writeAtomic(t, s.TrustedKeysFile, append(append([]byte{}, oldPub...), newPubPEM...))
	// 2. The operator restarts on the new key, trusting the old one until it has re-signed.
	must(t, s.Operator.Stop(10*time.Second))
	key, err := os.ReadFile(newKey)
	must(t, err)
	writeAtomic(t, s.SigningKeyFile, key)
	oldFile := filepath.Join(dir, "old.pub")
	must(t, os.WriteFile(oldFile, oldPub, 0o644))
	s.Operator.Args = append(s.Operator.Args, "--trusted-keys-file="+oldFile)
	must(t, s.StartOperator())
	only := zksign.NewKeyring(next.Public())
	must(t, harness.WaitFor(ctx, time.Minute, "plan, releases and deploy entries signed with the new key", func(ctx context.Context) (bool, error) {
		paths := [][2]string{{l.StagingService("a"), l.StagingService("a")}, {l.Release("a", "v1"), l.Release("a", "v1")}}
		entries, _, err := c.Children(ctx, l.Deploy())
		if err != nil {
			return false, err
		}
		ordered, _ := zklayout.SortSeq(entries)
		for _, e := range ordered {
			paths = append(paths, [2]string{l.DeployEntry(e.Child), l.DeployPrefix(e.Name)})
		}
		for _, p := range paths {
			data, _, err := c.Get(ctx, p[0])
			if err != nil {
				return false, err
			}
			if _, err := only.Verify(p[1], data); err != nil {
				return false, nil
			}
		}
		return true, nil
	}))
	// 3. The old key is dropped; a restarted agent reads everything afresh and adopts its
	// service on the re-signed release.
	writeAtomic(t, s.TrustedKeysFile, newPubPEM)
	n1 := s.Node(1)
	must(t, n1.StopAgent()) // its session closes: its registration goes, its service stays
	if ok, err := c.Exists(ctx, l.CurrentNode("a", n1.Name)); err != nil || ok {
		t.Fatalf("node-1's registration outlived its agent (exists %v, err %v)", ok, err)
	}
	must(t, n1.Start())
	must(t, waitExists(ctx, c, l.CurrentNode("a", n1.Name)))
	if names, _, err := c.Children(ctx, l.FailureService("a")); err != nil || len(names) > 0 {
		t.Fatalf("failures during the rotation: %v (err %v)", names, err)
	}
	// 4. The next rollout needs only the new key.
	setServices(t, s, ctx, "web", service(t, s, "a", "v2"))
	_, err = s.WaitForReady(ctx, "web", rolloutTime)
	must(t, err)
	must(t, s.WaitForServiceVersions(ctx, "a", "v2", time.Minute))
}

// writeAtomic replaces file as the kubelet updates a mounted Secret or ConfigMap: a new file
// renamed over the old.
func writeAtomic(t *testing.T, file string, data []byte) {
	t.Helper()
	tmp := file + ".tmp"
	must(t, os.WriteFile(tmp, data, 0o600))
	must(t, os.Rename(tmp, file))
}
