package artifact

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func TestFileName(t *testing.T) {
	for raw, want := range map[string]string{
		"https://h/a/b/web-1.2.tar.gz?x=1": "web-1.2.tar.gz",
		"https://h/":                       "artifact",
		"https://h":                        "artifact",
		"file:///srv/x.bin":                "x.bin",
		"%zz":                              "artifact",
	} {
		if got := FileName(raw); got != want {
			t.Errorf("FileName(%q) = %q, want %q", raw, got, want)
		}
	}
}

// A mismatch names the expected digest, never the computed one.
func TestCheckDigest(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a")
	if err := os.WriteFile(file, []byte("served"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := FileDigest(file)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("a", 64)
	err = CheckDigest(zklayout.Artifact{URL: "https://h/a", SHA256: want}, got)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), got) {
		t.Fatalf("mismatch: %v", err)
	}
	if err := CheckDigest(zklayout.Artifact{URL: "https://h/a", SHA256: got}, got); err != nil {
		t.Fatal(err)
	}
}
