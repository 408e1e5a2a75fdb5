package dashboard

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/browser"
)

// The page is tested in a real headless Chromium against a Store filled by hand: the page's
// own logic (node map, groups, details, actions). test/e2e drives it against a real rollout.

// fillDeploy puts a RollingDeploy "big" of services with n nodes each (shards of
// MaxNodeSetEntries) into store, node i of zone-<i%zones>, every node Running v1.
func fillDeploy(tb testing.TB, store *Store, n, zones int, services ...string) (map[string][]nodeSetView, deployView) {
	tb.Helper()
	rd := deployView{Name: "big", UID: "uid-big", Generation: 1, Services: []serviceSpecView{}}
	shards := map[string][]nodeSetView{}
	for i, svc := range services {
		sp := serviceSpecView{Name: svc, Version: "v2"}
		if i > 0 {
			sp.DependsOn = []string{services[i-1]}
		}
		rd.Services = append(rd.Services, sp)
		rd.Status.Services = append(rd.Status.Services, v1alpha1.ServiceStatus{Name: svc, Position: int32(i + 1), TargetVersion: "v2",
			Phase: v1alpha1.PhasePending, MinAvailable: int32(n * 9 / 10), Total: int32(n), Online: int32(n), Message: "waiting for its turn"})
		count := (n + v1alpha1.MaxNodeSetEntries - 1) / v1alpha1.MaxNodeSetEntries
		for s := range count {
			ns := nodeSetView{Name: fmt.Sprintf("big-%s-%d", svc, s), RollingDeploy: "big", UID: "uid-big", Service: svc,
				TargetVersion: "v2", Shard: int32(s), Shards: int32(count), TotalNodes: int32(n)}
			for j := s * v1alpha1.MaxNodeSetEntries; j < min(n, (s+1)*v1alpha1.MaxNodeSetEntries); j++ {
				ns.Nodes = append(ns.Nodes, v1alpha1.NodeEntry{Name: fmt.Sprintf("node-%05d", j), Version: "v1", Online: true,
					State: v1alpha1.NodeRunning, Address: fmt.Sprintf("10.0.%d.%d", j/250, j%250+1), Zone: fmt.Sprintf("zone-%d", j%zones),
					Since: &metav1.Time{Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}})
			}
			shards[svc] = append(shards[svc], ns)
			if err := store.Put(keyNodeSet+ns.Name, ns); err != nil {
				tb.Fatal(err)
			}
		}
	}
	rd.Status.Phase, rd.Status.Progress = v1alpha1.PhaseProgressing, fmt.Sprintf("0/%d", n*len(services))
	if err := store.Put(keyDeploy+rd.Name, rd); err != nil {
		tb.Fatal(err)
	}
	store.SetMeta(func(m *Meta) {
		m.Synced = true
		m.Access = Access{Deploys: true, NodeSets: true, Events: true, Patch: true}
	})
	return shards, rd
}

// seqOf waits until the page has applied the Store's changes up to seq.
func seqOf(seq uint64) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](fmt.Sprintf(`window.rkStats && window.rkStats.seq >= %d`, seq), chromedp.WithPollingTimeout(2*time.Minute))
}

func attr(tb testing.TB, ctx context.Context, sel, name string) string {
	tb.Helper()
	return browser.Run(tb, ctx, chromedp.AttributeValue(chromedp.CSS(sel), name)).Value
}

func TestPageNodeMapDetailsAndActions(t *testing.T) {
	store := NewStore()
	shards, rd := fillDeploy(t, store, 6, 2, "a", "b")
	var mu sync.Mutex
	var calls []string
	_, base := serve(t, store, ActionsFunc(func(_ context.Context, action, name, service string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, strings.TrimSpace(action+" "+name+" "+service))
		if action == "promote" {
			return "rollingdeploy/" + name + " promoted: " + service + " v2", nil
		}
		return "rollingdeploy/" + name + " paused: upgrades under way finish, no node starts a new one", nil
	}))
	ctx := browser.New(t, 1400, 1000)
	browser.Do(t, ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#c-a-node-00001`)))
	text := browser.Run(t, ctx, chromedp.Text(chromedp.CSS(`#c-a-node-00001`)))
	groups := browser.Run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('#map-a .group').length`))
	if text != "v1" || groups != 2 {
		t.Fatalf("cell text %q, %d zone groups: want v1 in 2 groups", text, groups)
	}

	// node-00001 of a upgrades, then fails: the cell follows, with the reason.
	ns := shards["a"][0]
	// Upgrading, it has no registration, so no zone: its cell stays in its zone's group.
	ns.Nodes[1].State, ns.Nodes[1].Version, ns.Nodes[1].Online, ns.Nodes[1].Zone = v1alpha1.NodeUpgrading, "v2", false, ""
	_ = store.Put(keyNodeSet+ns.Name, ns)
	_, seq, _, _ := store.Since(0)
	browser.Do(t, ctx, seqOf(seq))
	if class := attr(t, ctx, `#c-a-node-00001`, "class"); !strings.Contains(class, "s-Upgrading") {
		t.Fatalf("upgrading cell's class %q", class)
	}
	if g := browser.Run(t, ctx, chromedp.Evaluate[string](`document.getElementById('c-a-node-00001').closest('.group').dataset.group`)); g != "zone-1" {
		t.Fatalf("the upgrading node's cell moved to group %q, want zone-1", g)
	}
	ns.Nodes[1].Zone = "zone-1"
	reason := "HealthCheck v2: GET http://10.0.0.2:9000/healthz: 500 Internal Server Error"
	ns.Nodes[1].State, ns.Nodes[1].Version, ns.Nodes[1].Online, ns.Nodes[1].Message = v1alpha1.NodeFailed, "v1", true, reason
	_ = store.Put(keyNodeSet+ns.Name, ns)
	_, seq, _, _ = store.Since(0)
	browser.Do(t, ctx, seqOf(seq))
	class, title := attr(t, ctx, `#c-a-node-00001`, "class"), attr(t, ctx, `#c-a-node-00001`, "title")
	browser.Do(t, ctx, chromedp.Click(chromedp.CSS(`#c-a-node-00001`)), chromedp.WaitVisible(chromedp.CSS(`#node-detail`)))
	detail := browser.Run(t, ctx, chromedp.Text(chromedp.CSS(`#node-detail`)))
	if !strings.Contains(class, "s-Failed") || !strings.Contains(title, "500 Internal Server Error") {
		t.Fatalf("failed cell: class %q title %q", class, title)
	}
	for _, want := range []string{"address: 10.0.0.2", "zone: zone-1", "since: ", "500 Internal Server Error"} {
		if !strings.Contains(detail, want) {
			t.Fatalf("node details %q lack %q", detail, want)
		}
	}

	// Pause asks first; Cancel does nothing, Confirm pauses.
	browser.Do(t, ctx, chromedp.Click(chromedp.CSS(`#act-pause`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm-cancel`)), chromedp.WaitNotVisible(chromedp.CSS(`#confirm`)))
	mu.Lock()
	if len(calls) != 0 {
		t.Fatalf("cancelled pause carried out: %v", calls)
	}
	mu.Unlock()
	browser.Do(t, ctx, chromedp.Click(chromedp.CSS(`#act-pause`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		chromedp.Poll[chromedp.Void](`document.getElementById('notice').textContent.includes('paused')`, chromedp.WithPollingTimeout(time.Minute)))
	mu.Lock()
	if fmt.Sprint(calls) != "[pause big]" {
		t.Fatalf("actions: %v", calls)
	}
	mu.Unlock()

	// b waits in its canary phase: its head offers Promote, which asks first, then promotes b.
	if n := browser.Run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('[id^=promote-]').length`)); n != 0 {
		t.Fatalf("%d promote button(s) before any canary phase", n)
	}
	rd.Status.Services[1].Gate, rd.Status.Services[1].Waiting = "canary", "canary: 1 node(s) on v2; waiting for kubectl rollkeeper promote big"
	_ = store.Put(keyDeploy+rd.Name, rd)
	_, seq, _, _ = store.Since(0)
	browser.Do(t, ctx, seqOf(seq), browser.Click(`#promote-b`), chromedp.WaitVisible(chromedp.CSS(`#confirm`)))
	if text := browser.Run(t, ctx, chromedp.Evaluate[string](`document.getElementById('confirm-text').textContent`)); !strings.Contains(text, "canaries of b in rollingdeploy/big") {
		t.Fatalf("promote asks %q", text)
	}
	browser.Do(t, ctx, browser.Click(`#confirm-ok`),
		chromedp.Poll[chromedp.Void](`document.getElementById('notice').textContent.includes('promoted')`, chromedp.WithPollingTimeout(time.Minute)))
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(calls) != "[pause big promote big b]" {
		t.Fatalf("actions: %v", calls)
	}
}

// BenchmarkNodeMap measures the page in a real Chromium at 5,000 nodes and 4 services (20,000
// cells): the first render of the snapshot, and an update in which 250 nodes of every service
// change state (a wave), as script, style and layout time in the page (window.rkStats).
func BenchmarkNodeMap(b *testing.B) {
	const nodes, zones = 5000, 8
	services := []string{"a", "b", "c", "d"}
	store := NewStore()
	shards, _ := fillDeploy(b, store, nodes, zones, services...)
	_, base := serveBatch(b, store, nil, BatchInterval) // batches as the command sends them
	ctx := browser.New(b, 1600, 1000)
	var first, update, maxUpdate float64
	var cells int
	b.ResetTimer()
	for i := range b.N {
		browser.Do(b, ctx, chromedp.Navigate(base+"/"),
			chromedp.Poll[chromedp.Void](`window.rkStats && window.rkStats.firstRender !== null`, chromedp.WithPollingTimeout(2*time.Minute)))
		first += browser.Run(b, ctx, chromedp.Evaluate[float64](`window.rkStats.firstRender`))
		cells = browser.Run(b, ctx, chromedp.Evaluate[int](`window.rkStats.cells`))
		for _, svc := range services {
			ns := shards[svc][i%len(shards[svc])]
			for j := 0; j < 250; j++ {
				e := &ns.Nodes[(j*4+i)%len(ns.Nodes)]
				if e.State == v1alpha1.NodeRunning {
					e.State, e.Version, e.Online = v1alpha1.NodeUpgrading, "v2", false
				} else {
					e.State, e.Version, e.Online = v1alpha1.NodeRunning, "v1", true
				}
			}
			_ = store.Put(keyNodeSet+ns.Name, ns)
		}
		_, seq, _, _ := store.Since(0)
		browser.Do(b, ctx, seqOf(seq))
		update += browser.Run(b, ctx, chromedp.Evaluate[float64](`window.rkStats.lastUpdate`))
		maxUpdate = max(maxUpdate, browser.Run(b, ctx, chromedp.Evaluate[float64](`window.rkStats.maxUpdate`)))
	}
	b.StopTimer()
	b.ReportMetric(first/float64(b.N), "first-render-ms")
	b.ReportMetric(update/float64(b.N), "update-ms")
	b.ReportMetric(float64(cells), "cells")
	fmt.Printf("node map, %d nodes × %d services (%d cells): first render %.0f ms, update of 250 nodes per service %.0f ms (worst %.0f ms), %d runs\n",
		nodes, len(services), cells, first/float64(b.N), update/float64(b.N), maxUpdate, b.N)
}
