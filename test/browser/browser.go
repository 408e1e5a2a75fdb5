// Package browser starts a real headless Chromium (Debian's package) for the dashboard's
// tests and benchmarks, driven through the DevTools protocol (chromedp).
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

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

// StepTimeout bounds one call of Do or Run. chromedp's waits on the DOM (a query, a click, a
// visibility) have no deadline of their own: an element that never comes would hold the test
// until its package's timeout, which names no step. A step of these tests takes seconds.
var StepTimeout = 4 * time.Minute

// Do runs the steps on the page within StepTimeout or fails the test.
func Do(tb testing.TB, page context.Context, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(page, StepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.Fatalf("page: %v", stepErr(ctx, err))
	}
}

// Run runs a on the page within StepTimeout and returns its value, or fails the test.
func Run[T any](tb testing.TB, page context.Context, a chromedp.Action[T]) T {
	tb.Helper()
	ctx, cancel := context.WithTimeout(page, StepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.Fatalf("page: %v", stepErr(ctx, err))
	}
	return v
}

func stepErr(ctx context.Context, err error) error {
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("the step did not finish within %s (an element it waits for never came?): %w", StepTimeout, err)
	}
	return err
}

// Click waits until an element matching the CSS selector is visible and clicks it, both in one
// turn of the page's script. chromedp.Click measures the element's box, then presses the mouse
// at that position: on a page redrawn by live updates the layout may move in between, the
// press lands on something else, and the wait for what the click should open never ends.
func Click(selector string) chromedp.Action[chromedp.Void] {
	sel, _ := json.Marshal(selector) // a string always marshals
	return chromedp.Poll[chromedp.Void](fmt.Sprintf(`(() => { const e = document.querySelector(%s);
		if (!e || !e.checkVisibility()) return false;
		e.click();
		return true; })()`, sel), chromedp.WithPollingTimeout(StepTimeout))
}
