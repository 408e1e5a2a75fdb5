package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/rollkeeper/rollkeeper/internal/zkcache"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// The status pass reads through the watch-fed cache: once a service has been read, a pass
// costs ZooKeeper requests only for what changed since (issue 12), and still sees every change.
func TestStatusPassCostsWhatChanged(t *testing.T) {
	ctx := context.Background()
	// Its own session, so that its request count is this test's alone. The writes go through
	// it too: a session receives the watch events of its own write before the write's answer,
	// so the next pass sees them without waiting.
	zk, err := zkclient.Dial(ctx, zkclient.Config{Servers: []string{zkServer.Connect()}, SessionTimeout: 15 * time.Second, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer zk.Close()
	r := &RollingDeployReconciler{ZK: zk, Layout: layout, cache: zkcache.New(zk, 0)}
	const svc, n = "cachepass", 40
	for _, p := range []string{layout.CurrentService(svc), layout.StagingService(svc), layout.ProgressService(svc)} {
		if err := zk.EnsurePath(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	put := func(p string, v zklayout.Payload, mode zkclient.Mode) {
		t.Helper()
		data, err := zklayout.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zk.Create(ctx, p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	for i := range n {
		node := fmt.Sprintf("cp-%02d", i)
		put(layout.CurrentNode(svc, node), &zklayout.Current{Node: node, Version: "v1", Health: "ok", Since: now}, zkclient.Ephemeral)
		put(layout.ProgressNode(svc, node), &zklayout.Progress{Node: node, Version: "v2", Done: 1, Total: 10, Updated: now}, zkclient.Ephemeral)
	}
	for i := range n / 2 {
		node := fmt.Sprintf("cp-%02d", i)
		put(layout.StagingChild(svc, node+"-"), &zklayout.Staged{Node: node, Version: "v2", State: zklayout.StagedReady, Since: now}, zkclient.EphemeralSequential)
	}

	pass := func() (*serviceState, int64) {
		t.Helper()
		before := zk.Traffic().Reads
		st, err := r.readService(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		return st, zk.Traffic().Reads - before
	}
	st, cold := pass()
	if len(st.obs.Current) != n || len(st.obs.Staged) != n/2 || len(st.obs.Progress) != n {
		t.Fatalf("first pass read %d registrations, %d staged, %d progress; want %d, %d, %d",
			len(st.obs.Current), len(st.obs.Staged), len(st.obs.Progress), n, n/2, n)
	}
	if cold < 2*n {
		t.Fatalf("first pass: %d requests; a cold pass reads every registration and progress child (at least %d)", cold, 2*n)
	}
	_, warm := pass()
	if warm > 4 {
		t.Fatalf("pass with nothing changed: %d requests; want at most 4 (znodes that do not exist, such as the plan here, are read each time)", warm)
	}

	// One node re-registers on v2 and another reports progress.
	if err := zk.Delete(ctx, layout.CurrentNode(svc, "cp-03"), -1); err != nil {
		t.Fatal(err)
	}
	put(layout.CurrentNode(svc, "cp-03"), &zklayout.Current{Node: "cp-03", Version: "v2", Health: "ok", Since: now}, zkclient.Ephemeral)
	data, err := zklayout.Encode(&zklayout.Progress{Node: "cp-07", Version: "v2", Done: 9, Total: 10, Updated: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zk.Set(ctx, layout.ProgressNode(svc, "cp-07"), data, -1); err != nil {
		t.Fatal(err)
	}
	st, changed := pass()
	if changed > 4+3 {
		t.Fatalf("pass after two changes: %d requests; want at most %d (the relisting of current/, the two changed children, and the reads of absent znodes)", changed, 4+3)
	}
	version := map[string]string{}
	for _, c := range st.obs.Current {
		version[c.Node] = c.Version
	}
	var done int64
	for _, p := range st.obs.Progress {
		if p.Node == "cp-07" {
			done = p.Done
		}
	}
	if len(st.obs.Current) != n || version["cp-03"] != "v2" || version["cp-04"] != "v1" || done != 9 {
		t.Fatalf("pass after changes: %d registrations, cp-03 on %q, cp-04 on %q, cp-07 done %d; want %d, v2, v1, 9",
			len(st.obs.Current), version["cp-03"], version["cp-04"], done, n)
	}
	t.Logf("status pass at %d nodes: cold %d requests, unchanged %d, after two changes %d", n, cold, warm, changed)
}
