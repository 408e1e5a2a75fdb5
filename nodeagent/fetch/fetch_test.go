package fetch

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func tgz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func serve(t *testing.T, body []byte) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestFetchTarGz(t *testing.T) {
	body := tgz(t, map[string]string{"bin/svc": "#!/bin/sh\n", "VERSION": "v2"})
	url := serve(t, body)
	dest := filepath.Join(t.TempDir(), "versions", "v2")
	err := NewHTTP().Fetch(context.Background(), &zklayout.Release{Artifact: zklayout.Artifact{URL: url + "/a.tgz", SHA256: digest(body), Unpack: zklayout.UnpackTarGz}}, dest)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "VERSION")); err != nil || string(b) != "v2" {
		t.Fatalf("VERSION = %q, %v", b, err)
	}
}

func TestFetchSingleFileFromFileURL(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(src, []byte("bits"), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "v1")
	if err := NewHTTP().Fetch(context.Background(), &zklayout.Release{Artifact: zklayout.Artifact{URL: "file://" + src, SHA256: digest([]byte("bits")), Unpack: zklayout.UnpackNone}}, dest); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "tool")); string(b) != "bits" {
		t.Fatalf("content = %q", b)
	}
}

// A wrong digest, a missing artifact or a hostile archive leave nothing behind.
func TestFetchFailuresLeaveNothing(t *testing.T) {
	good := tgz(t, map[string]string{"VERSION": "v2"})
	evil := tgz(t, map[string]string{"../../escape": "x"})
	url := serve(t, good)
	evilURL := serve(t, evil)
	for _, tc := range []struct {
		name string
		a    zklayout.Artifact
		is   error
	}{
		{"wrong sha256", zklayout.Artifact{URL: url + "/a", SHA256: digest([]byte("other")), Unpack: zklayout.UnpackTarGz}, artifact.ErrDigestMismatch},
		{"404", zklayout.Artifact{URL: url + "/missing", SHA256: digest(good), Unpack: zklayout.UnpackTarGz}, nil},
		{"path traversal", zklayout.Artifact{URL: evilURL + "/a", SHA256: digest(evil), Unpack: zklayout.UnpackTarGz}, nil},
		{"not gzip", zklayout.Artifact{URL: url + "/a", SHA256: digest(good), Unpack: zklayout.UnpackTarGz}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.a
			if tc.name == "not gzip" {
				plain := []byte("plain")
				a = zklayout.Artifact{URL: serve(t, plain) + "/a", SHA256: digest(plain), Unpack: zklayout.UnpackTarGz}
			}
			parent := t.TempDir()
			err := NewHTTP().Fetch(context.Background(), &zklayout.Release{Artifact: a}, filepath.Join(parent, "v"))
			if err == nil {
				t.Fatal("fetch succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Fatalf("left behind: %v", entries)
			}
		})
	}
}

// errNotAMismatch stands for any error but artifact.ErrDigestMismatch in TestInstallChecked.
var errNotAMismatch = errors.New("an error other than a digest mismatch")

// InstallChecked lays out only bytes whose sha256 matches, a single file or an archive, and
// hashes an archive's bytes past what unpacking reads (gzip and tar stop at their end marks).
func TestInstallChecked(t *testing.T) {
	archive := tgz(t, map[string]string{"VERSION": "v2"})
	trailing := append(append([]byte(nil), archive...), "appended after the archive"...)
	for _, tc := range []struct {
		name    string
		body    []byte
		a       zklayout.Artifact
		wantErr error
	}{
		{"file", []byte("bits"), zklayout.Artifact{URL: "http://o/tool", SHA256: digest([]byte("bits"))}, nil},
		{"file, other bytes", []byte("bitz"), zklayout.Artifact{URL: "http://o/tool", SHA256: digest([]byte("bits"))}, artifact.ErrDigestMismatch},
		{"archive", archive, zklayout.Artifact{URL: "http://o/a.tgz", SHA256: digest(archive), Unpack: zklayout.UnpackTarGz}, nil},
		// The digest names the archive without the appended bytes: its check must see them.
		{"archive, bytes appended", trailing, zklayout.Artifact{URL: "http://o/a.tgz", SHA256: digest(archive), Unpack: zklayout.UnpackTarGz}, artifact.ErrDigestMismatch},
		{"archive with its trailer, as named", trailing, zklayout.Artifact{URL: "http://o/a.tgz", SHA256: digest(trailing), Unpack: zklayout.UnpackTarGz}, nil},
		// Other bytes that do not unpack: the wrong bytes (a corrupt download is fetched again).
		{"archive, other bytes that do not unpack", []byte("not gzip"), zklayout.Artifact{URL: "http://o/a.tgz", SHA256: digest(archive), Unpack: zklayout.UnpackTarGz}, artifact.ErrDigestMismatch},
		// The named bytes, which do not unpack: the archive's fault, not a digest mismatch.
		{"bytes as named that do not unpack", []byte("not gzip"), zklayout.Artifact{URL: "http://o/a.tgz", SHA256: digest([]byte("not gzip")), Unpack: zklayout.UnpackTarGz}, errNotAMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "v")
			err := InstallChecked(bytes.NewReader(tc.body), tc.a, dest, Limits{})
			if tc.wantErr == errNotAMismatch {
				if err == nil || errors.Is(err, artifact.ErrDigestMismatch) {
					t.Fatalf("err = %v, want an unpack error", err)
				}
				if entries, _ := os.ReadDir(parent); len(entries) != 0 {
					t.Fatalf("left behind: %v", entries)
				}
				return
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if entries, _ := os.ReadDir(parent); len(entries) != 0 {
					t.Fatalf("left behind: %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, name := "bits", "tool"
			if tc.a.Unpack == zklayout.UnpackTarGz {
				want, name = "v2", "VERSION"
			}
			if b, err := os.ReadFile(filepath.Join(dest, name)); err != nil || string(b) != want {
				t.Fatalf("%s = %q, %v", name, b, err)
			}
		})
	}
}
