package hostenv

import (
	"slices"
	"testing"
)

func TestBuildKeepsOnlyPathAndTheRunsVariables(t *testing.T) {
	t.Setenv("ROLLKEEPER_ZK_AUTH", "agent:secret")
	t.Setenv("PATH", "/opt/agent/bin:/usr/bin")
	got := Build("ROLLKEEPER_VERSION=v1", "A=b")
	want := []string{"PATH=/opt/agent/bin:/usr/bin", "ROLLKEEPER_VERSION=v1", "A=b"}
	if !slices.Equal(got, want) {
		t.Fatalf("Build = %q, want %q", got, want)
	}
}

func TestBuildDefaultPath(t *testing.T) {
	t.Setenv("PATH", "")
	if got := Build(); !slices.Equal(got, []string{"PATH=" + DefaultPath}) {
		t.Fatalf("Build() = %q, want only the default PATH", got)
	}
}
