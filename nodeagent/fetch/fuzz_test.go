package fetch

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// tarGz builds an archive from raw headers (names and types as an attacker would pick them).
func tarGz(f *testing.F, entries ...tar.Header) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		body := []byte(strings.Repeat("x", int(h.Size)))
		if err := tw.WriteHeader(&h); err != nil {
			f.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			f.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// fuzzLimits are small enough for fuzzed inputs (at most 8 KiB) to reach.
var fuzzLimits = Limits{MaxUnpackedBytes: 256 << 10, MaxEntries: 64}

// FuzzInstall: whatever bytes an artifact holds, Install writes nothing outside dest, creates
// no links or devices, stays within its Limits (small here, so that inputs can reach them), and
// leaves either a complete dest or none.
func FuzzInstall(f *testing.F) {
	reg := func(name string, size int64) tar.Header {
		return tar.Header{Name: name, Mode: 0o755, Size: size, Typeflag: tar.TypeReg}
	}
	f.Add(true, tarGz(f, tar.Header{Name: "bin/", Mode: 0o755, Typeflag: tar.TypeDir}, reg("bin/app", 3), reg("README", 1)))
	f.Add(true, tarGz(f, reg("../escape", 1)))
	f.Add(true, tarGz(f, reg("/abs", 1)))
	f.Add(true, tarGz(f, reg("a/../../escape", 1)))
	f.Add(true, tarGz(f, tar.Header{Name: "link", Linkname: "/etc/passwd", Typeflag: tar.TypeSymlink}))
	f.Add(true, tarGz(f, tar.Header{Name: "hard", Linkname: "../x", Typeflag: tar.TypeLink}))
	f.Add(true, tarGz(f, reg("a", 1), reg("a/b", 1)))
	f.Add(true, tarGz(f, reg(".", 1)))
	f.Add(true, []byte("not gzip"))
	f.Add(false, []byte("#!/bin/sh\necho hi\n"))
	f.Add(true, tarGz(f, reg("bomb", fuzzLimits.MaxUnpackedBytes+1)))
	f.Add(true, tarGz(f, reg("a", fuzzLimits.MaxUnpackedBytes/2), reg("b", fuzzLimits.MaxUnpackedBytes/2+1)))
	many := make([]tar.Header, fuzzLimits.MaxEntries+1)
	for i := range many {
		many[i] = reg(fmt.Sprintf("f%d", i), 0)
	}
	f.Add(true, tarGz(f, many...))
	f.Add(true, oldGNUSparse(f, 1<<20))
	f.Add(true, paxSparse(f, 1<<20))
	f.Fuzz(func(t *testing.T, unpack bool, data []byte) {
		if len(data) > 8<<10 {
			// Deflate expands up to ~1000:1; larger inputs only make each run slower. Real
			// artifacts are bounded by their verified sha256 and checkSpace, not here.
			return
		}
		root := t.TempDir()
		dest := filepath.Join(root, "v1")
		a := zklayout.Artifact{URL: "http://x/app", SHA256: strings.Repeat("a", 64), Unpack: zklayout.UnpackNone}
		if unpack {
			a.Unpack = zklayout.UnpackTarGz
		}
		err := InstallLimited(bytes.NewReader(data), a, dest, fuzzLimits)
		entries, rerr := os.ReadDir(root)
		if rerr != nil {
			t.Fatal(rerr)
		}
		for _, e := range entries {
			if e.Name() != "v1" {
				t.Fatalf("Install left %q beside dest (err %v)", e.Name(), err)
			}
		}
		if err != nil {
			if len(entries) != 0 {
				t.Fatalf("failed Install (%v) left dest behind", err)
			}
			return
		}
		var files int
		var size int64
		werr := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() && !d.IsDir() {
				t.Fatalf("Install created %s of type %v", p, d.Type())
			}
			if p == dest {
				return nil
			}
			files++
			if d.Type().IsRegular() {
				fi, err := d.Info()
				if err != nil {
					return err
				}
				size += fi.Size()
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
		if unpack && (size > fuzzLimits.MaxUnpackedBytes || files > fuzzLimits.MaxEntries) {
			t.Fatalf("Install unpacked %d entries, %d bytes; limits %+v", files, size, fuzzLimits)
		}
	})
}
