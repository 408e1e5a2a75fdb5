// Package localstack brings up rollkeeper's real stack on one machine, for the demo (cmd/demo)
// and, through test/harness, the e2e tests (test/e2e): a real ZooKeeper (localstack/zkserver),
// a real kube-apiserver and etcd (envtest with the generated CRDs and an admin kubeconfig file),
// the operator and node agents as separate processes, fixture artifacts served over loopback
// HTTP, and an independent ZooKeeper Recorder that proves what the agents did. Nothing is
// mocked.
//
// The pieces work alone (StartControlPlane, NewArtifactServer, NewRecorder, Process, Build) or
// together through Start, which returns a Stack. The package links no test code (no "testing",
// nothing under test/), so cmd/demo can use it; test/harness adds the *testing.T conveniences
// (StartT, Main) on top.
package localstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// PollInterval is how often WaitFor re-checks its condition.
const PollInterval = 100 * time.Millisecond

var (
	repoRootOnce sync.Once
	repoRoot     string
	repoRootErr  error
)

// RepoRoot returns the directory of rollkeeper's go.mod, found upward from the working
// directory (tests run in their package directory) or from $ROLLKEEPER_REPO_ROOT.
func RepoRoot() (string, error) {
	repoRootOnce.Do(func() {
		if d := os.Getenv("ROLLKEEPER_REPO_ROOT"); d != "" {
			repoRoot = d
			return
		}
		dir, err := os.Getwd()
		if err != nil {
			repoRootErr = fmt.Errorf("find repository root: %w", err)
			return
		}
		for {
			b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && isRootModule(b) {
				repoRoot = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				repoRootErr = errors.New("find repository root: no go.mod of github.com/rollkeeper/rollkeeper above the working directory (set ROLLKEEPER_REPO_ROOT)")
				return
			}
			dir = parent
		}
	})
	return repoRoot, repoRootErr
}

func isRootModule(gomod []byte) bool {
	const want = "module github.com/rollkeeper/rollkeeper\n"
	return len(gomod) >= len(want) && string(gomod[:len(want)]) == want
}

// permanentError stops WaitFor at once.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks an error returned by a WaitFor condition as final: WaitFor returns it at
// once instead of polling on.
func Permanent(err error) error { return permanentError{err} }

// WaitFor polls cond every PollInterval until it returns true, returns a Permanent error, ctx
// ends, or timeout passes. Other errors count as "not yet"; the last one is reported on
// timeout together with what, which names the awaited state for the error message.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(PollInterval)
	defer ticker.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return fmt.Errorf("waiting for %s: %w", what, perm.err)
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: gave up after %s: %w (last error: %w)", what, timeout, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: gave up after %s: %w", what, timeout, ctx.Err())
		case <-ticker.C:
		}
	}
}
