package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/browser"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// startDashboard runs `kubectl rollkeeper dashboard --port 0` with the stack's kubeconfig and
// returns the URL it prints; the process ends with the test.
func startDashboard(t *testing.T, s *harness.Stack, ctx context.Context) string {
	t.Helper()
	bins, err := harness.Build(ctx, harness.PluginBinary)
	must(t, err)
	pctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(pctx, bins[harness.PluginBinary], "dashboard", "--port", "0", "--kubeconfig="+s.Kubeconfig)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("kubectl rollkeeper dashboard printed no address: %v", err)
	}
	m := regexp.MustCompile(`(http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("kubectl rollkeeper dashboard printed %q, want its URL", line)
	}
	t.Logf("dashboard: %s", strings.TrimSpace(line))
	return m[1]
}

// cellIs waits until the page shows node's cell of svc with the version as text and the state.
func cellIs(svc, node, version string, state rkv1alpha1.NodeState) chromedp.Action[chromedp.Void] {
	return until(fmt.Sprintf(`(() => { const c = document.getElementById(%q);
		return !!c && c.textContent === %q && c.classList.contains(%q); })()`, "c-"+svc+"-"+node, version, "s-"+string(state)))
}

// until waits until the page's expression is true (rolloutTime bounds the wait).
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(rolloutTime))
}

// confirm presses the page's button of action and confirms.
func confirm(action string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(browser.Click("#act-"+action), browser.Click(`#confirm-ok`))
}

// TestDashboardInBrowser drives the dashboard in a real headless Chromium while real rollouts
// run: pause from the page holds the rollout (nodes stage, none upgrades), resume lets it go and
// cells turn from the old version to the new one as nodes upgrade, and a failing version turns
// a cell red with the reason.
func TestDashboardInBrowser(t *testing.T) {
	s, ctx := start(t, harness.Config{NodeLabels: func(i int) map[string]string {
		return map[string]string{rkv1alpha1.LabelZone: fmt.Sprintf("zone-%c", 'a'+(i-1)%2)}
	}})
	deployV1(t, s, ctx, "web", service(t, s, "a", "v1", harness.MinAvailable(4)))
	url := startDashboard(t, s, ctx)
	page := browser.New(t, 1400, 1100)
	browser.Do(t, page, chromedp.Navigate(url))
	for _, n := range s.Nodes {
		browser.Do(t, page, cellIs("a", n.Name, "v1", rkv1alpha1.NodeUpdated))
	}
	zones := browser.Run(t, page, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#map-a .group')].map(g => g.dataset.group)`))
	if fmt.Sprint(zones) != "[zone-a zone-b]" {
		t.Fatalf("node map groups %v, want the nodes' zones [zone-a zone-b]", zones)
	}

	// Paused from the page, v2 only stages: every cell turns Staged (ready to roll), none upgrades.
	browser.Do(t, page, confirm("pause"))
	_, err := s.WaitForRD(ctx, "web", time.Minute, "spec.paused from the page", func(rd *rkv1alpha1.RollingDeploy) bool {
		return rd.Spec.Paused
	})
	must(t, err)
	setServices(t, s, ctx, "web", service(t, s, "a", "v2", harness.MinAvailable(4)))
	browser.Do(t, page, until(`document.getElementById('rd-phase').textContent === 'Paused'`))
	for _, n := range s.Nodes {
		browser.Do(t, page, cellIs("a", n.Name, "v1", rkv1alpha1.NodeStaged))
	}
	rd, err := s.GetRD(ctx, "web")
	must(t, err)
	if st := harness.ServiceStatus(rd, "a"); st == nil || st.Updated != 0 {
		t.Fatalf("a node upgraded while paused: %s", harness.DescribeStatus(rd))
	}

	// Resumed from the page: one node at a time (minAvailable 4 of 5), each cell turns from v1
	// to v2.
	browser.Do(t, page, confirm("resume"), until(`document.querySelectorAll('#map-a .cell.s-Updated').length >= 1 &&
		!document.getElementById('svc-a').textContent.includes('updated 0')`))
	screenshot(t, page)
	for _, n := range s.Nodes {
		browser.Do(t, page, cellIs("a", n.Name, "v2", rkv1alpha1.NodeUpdated))
	}
	_, err = s.WaitForReady(ctx, "web", rolloutTime)
	must(t, err)

	// v3 fails its health check: the node that tried it turns red, with the reason.
	setServices(t, s, ctx, "web", service(t, s, "a", "v3", harness.MinAvailable(4), harness.Unhealthy()))
	browser.Do(t, page, until(`document.querySelector('#map-a .cell.s-Failed') !== null`))
	title := browser.Run(t, page, chromedp.Evaluate[string](`document.querySelector('#map-a .cell.s-Failed').title`))
	// Clicked and read by the page's own script: the page redraws as the status and node sets
	// come, and chromedp's DOM waits, which follow the page through its own copy of the DOM, once
	// waited for good on a panel replaced under them (a loaded machine, see browser.Click).
	// The details join the node set (the cell) and the RollingDeploy's status (the failure's
	// full reason): two objects the page hears of one after the other. Wait for both.
	browser.Do(t, page, browser.Click(`#map-a .cell.s-Failed`),
		until(`(document.getElementById('node-detail') || {}).textContent?.includes('last failure: HealthCheck on v3')`))
	detail := browser.Run(t, page, chromedp.Evaluate[string](`document.getElementById('node-detail').textContent`))
	if !strings.Contains(title, "health check") || !strings.Contains(detail, "last failure: HealthCheck on v3") {
		t.Fatalf("failed cell: title %q, details %q: want the health check's reason", title, detail)
	}
	browser.Do(t, page, until(`document.getElementById('phase-a').textContent === 'Failed'`))
}

// screenshot saves the page: to docs/dashboard.png (the README's picture) when
// ROLLKEEPER_UPDATE_SCREENSHOT=1, else to the test's temp dir.
func screenshot(t *testing.T, page context.Context) {
	t.Helper()
	png := browser.Run(t, page, chromedp.FullScreenshot(100))
	path := filepath.Join(t.TempDir(), "dashboard.png")
	if os.Getenv("ROLLKEEPER_UPDATE_SCREENSHOT") == "1" {
		root, err := harness.RepoRoot()
		must(t, err)
		path = filepath.Join(root, "docs", "dashboard.png")
	}
	must(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot of the rollout: %s (%d bytes)", path, len(png))
}
