// Package browser starts a real headless Chromium (Debian's package) for the dashboard's
// tests and benchmarks, driven through the DevTools protocol (chromedp).
package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Path returns the Chromium binary: $ROLLKEEPER_CHROMIUM, else chromium on $PATH (make deps
// installs Debian's package).
func Path() (string, error) {
	if p := os.Getenv("ROLLKEEPER_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium: install it (make deps, or apt-get install -y chromium) or set ROLLKEEPER_CHROMIUM")
}

// New starts a headless Chromium with a fresh profile and returns a tab's context; both end
// with the test. The flags keep it off the network but for the pages it is sent to (this
// machine's network refuses the rest, many connections at a time) and fit it to a container
// (no sandbox as root, no GPU).
func New(tb testing.TB, width, height int) context.Context {
	tb.Helper()
	path, err := Path()
	if err != nil {
		tb.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(width, height),
	}
	// An uncaught exception in the page ends the browser at once, so a test waiting for the
	// page fails with the exception instead of waiting for its deadline.
	root, crash := context.WithCancel(context.Background())
	actx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(tb.Logf), chromedp.WithListener(func(ev any) {
		if ex, ok := ev.(*runtime.EventExceptionThrown); ok && ex.ExceptionDetails != nil {
			d := ex.ExceptionDetails
			what := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				what = d.Exception.Description
			}
			tb.Errorf("exception in the page (%s:%d): %s", d.URL, d.LineNumber+1, what)
			crash()
		}
	}))
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
		crash()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		tb.Fatalf("start Chromium (%s): %v", path, err)
	}
	return ctx
}
