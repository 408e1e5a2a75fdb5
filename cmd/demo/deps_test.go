package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The demo is a product binary: it must not link the testing package or anything under test/
// (the local stack lives in internal/localstack for that; test/harness wraps it for the tests).
func TestLinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	deps := strings.Fields(string(out))
	const localstack = "github.com/rollkeeper/rollkeeper/internal/localstack"
	found := false
	for _, p := range deps {
		if p == "testing" || strings.HasPrefix(p, "testing/") || strings.Contains(p, "/test/") {
			t.Errorf("cmd/demo depends on %s", p)
		}
		found = found || p == localstack
	}
	if !found {
		t.Errorf("go list -deps does not list %s; is the output what this test expects?\n%s", localstack, out)
	}
}
