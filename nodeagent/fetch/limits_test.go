package fetch

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

var tgzArtifact = zklayout.Artifact{URL: "http://origin/app.tgz", SHA256: strings.Repeat("a", 64), Unpack: zklayout.UnpackTarGz}

// gzipped compresses b as one gzip member.
func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	if _, err := gz.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawEntry is one tar entry (header block(s), body, padding) without the archive's trailer, as
// archive/tar writes it for hdr, with the typeflag of its last header block then replaced by
// typeflag and the checksum recomputed. archive/tar's writer refuses or silently drops what a
// hostile archive holds (sparse types, GNU.sparse.* PAX records, hand-written PAX headers), so
// tests write a plain entry and patch its header block the way an attacker's tool would.
// patch, if not nil, edits the header block further (before the checksum).
func rawEntry(t testing.TB, hdr tar.Header, body []byte, typeflag byte, patch func(blk []byte)) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	data := (len(body) + 511) / 512 * 512
	blk := b[len(b)-data-512 : len(b)-data]
	blk[156] = typeflag
	if patch != nil {
		patch(blk)
	}
	setChecksum(blk)
	return b
}

// setChecksum writes a ustar header block's checksum: the sum of its bytes with the checksum
// field read as spaces, six octal digits, NUL, space.
func setChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk[:512] {
		sum += int64(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// octal writes n into a numeric header field of len(field) bytes (digits, then NUL).
func octal(field []byte, n int64) {
	copy(field, fmt.Sprintf("%0*o\x00", len(field)-1, n))
}

// paxRecords is the body of a PAX extended header holding kv.
func paxRecords(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		rec := " " + kv[i] + "=" + kv[i+1] + "\n"
		// The length prefix counts itself.
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		b = append(b, fmt.Sprint(n)+rec...)
	}
	return b
}

// trailer ends a tar archive.
var trailer = make([]byte, 1024)

// oldGNUSparse is an archive with one old-GNU-format sparse entry (type 'S') of realSize bytes,
// holding 512 bytes of data at offset 0; archive/tar reads it back as realSize bytes.
func oldGNUSparse(t testing.TB, realSize int64) []byte {
	body := bytes.Repeat([]byte("s"), 512)
	e := rawEntry(t, tar.Header{Name: "sparse", Mode: 0o644, Size: 512, Typeflag: tar.TypeReg, Format: tar.FormatGNU}, body, tar.TypeGNUSparse,
		func(blk []byte) {
			octal(blk[386:398], 0)        // sparse[0].offset
			octal(blk[398:410], 512)      // sparse[0].numbytes
			octal(blk[483:495], realSize) // realsize
		})
	return gzipped(t, append(e, trailer...))
}

// paxSparse is an archive with one PAX (format 1.0) sparse entry of realSize bytes: a PAX
// header with the GNU.sparse.* records, then a regular entry whose data starts with the sparse
// map (one 512-byte fragment at the end of the file).
func paxSparse(t testing.TB, realSize int64) []byte {
	recs := paxRecords("GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.name", "sparse",
		"GNU.sparse.realsize", fmt.Sprint(realSize))
	x := rawEntry(t, tar.Header{Name: "PaxHeaders/sparse", Mode: 0o644, Size: int64(len(recs)), Typeflag: tar.TypeReg},
		recs, tar.TypeXHeader, nil)
	sparseMap := make([]byte, 512)
	copy(sparseMap, fmt.Sprintf("1\n%d\n512\n", realSize-512))
	body := append(sparseMap, bytes.Repeat([]byte("s"), 512)...)
	e := rawEntry(t, tar.Header{Name: "GNUSparseFile.0/sparse", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg},
		body, tar.TypeReg, nil)
	return gzipped(t, append(append(x, e...), trailer...))
}

// checkRefused asserts err is an ErrArchiveLimit naming the artifact and containing want, and
// that parent holds nothing.
func checkRefused(t *testing.T, err error, parent, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("Install succeeded")
	}
	if !errors.Is(err, ErrArchiveLimit) || !strings.Contains(err.Error(), tgzArtifact.URL) || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v; want %v naming %s and %q", err, ErrArchiveLimit, tgzArtifact.URL, want)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

// A decompression bomb: about 1 MiB of gzip holding a tar entry of 1 GiB of zeros. It is
// streamed (gzip members concatenated on the fly: the same compressed MiB of zeros 1024 times),
// never held in memory, and refused at once with the limit named.
func TestInstallRefusesDecompressionBomb(t *testing.T) {
	const size = 1 << 30
	hdr := rawEntry(t, tar.Header{Name: "zeros", Mode: 0o644, Size: 0, Typeflag: tar.TypeReg}, nil, tar.TypeReg,
		func(blk []byte) { octal(blk[124:136], size) })
	zeroMiB := gzipped(t, make([]byte, 1<<20))
	parts := []io.Reader{bytes.NewReader(gzipped(t, hdr))}
	for range size >> 20 {
		parts = append(parts, bytes.NewReader(zeroMiB))
	}
	parts = append(parts, bytes.NewReader(gzipped(t, trailer)))
	parent := t.TempDir()
	start := time.Now()
	err := InstallLimited(io.MultiReader(parts...), tgzArtifact, filepath.Join(parent, "v1"), Limits{MaxUnpackedBytes: 64 << 20})
	checkRefused(t, err, parent, "limit 67108864 (--max-unpacked-bytes)")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("refusing the bomb took %s", d)
	}
}

// Entries each within the limit count together, as bytes written.
func TestInstallCountsBytesAcrossEntries(t *testing.T) {
	var entries []byte
	for i := range 5 {
		entries = append(entries, rawEntry(t, tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: 300 << 10, Typeflag: tar.TypeReg},
			make([]byte, 300<<10), tar.TypeReg, nil)...)
	}
	archive := gzipped(t, append(entries, trailer...))
	parent := t.TempDir()
	err := InstallLimited(bytes.NewReader(archive), tgzArtifact, filepath.Join(parent, "v1"), Limits{MaxUnpackedBytes: 1 << 20})
	checkRefused(t, err, parent, "more than the limit 1048576 (--max-unpacked-bytes)")

	// Within the limit it installs.
	dest := filepath.Join(t.TempDir(), "v1")
	if err := InstallLimited(bytes.NewReader(archive), tgzArtifact, dest, Limits{MaxUnpackedBytes: 5 * 300 << 10}); err != nil {
		t.Fatal(err)
	}
}

func TestInstallRefusesTooManyEntries(t *testing.T) {
	build := func(n int) []byte {
		var b []byte
		for i := range n {
			b = append(b, rawEntry(t, tar.Header{Name: fmt.Sprintf("d/f%d", i), Mode: 0o644, Typeflag: tar.TypeReg}, nil, tar.TypeReg, nil)...)
		}
		return gzipped(t, append(b, trailer...))
	}
	parent := t.TempDir()
	err := InstallLimited(bytes.NewReader(build(11)), tgzArtifact, filepath.Join(parent, "v1"), Limits{MaxEntries: 10})
	checkRefused(t, err, parent, "more than 10 entries, the limit (--max-archive-entries)")
	if err := InstallLimited(bytes.NewReader(build(10)), tgzArtifact, filepath.Join(t.TempDir(), "v1"), Limits{MaxEntries: 10}); err != nil {
		t.Fatalf("10 entries, limit 10: %v", err)
	}
}

// Sparse entries are refused whatever their format: their holes unpack to zeros the archive
// does not hold. The archives are checked to be valid first (archive/tar reads them back as
// realSize bytes), so the refusal is Install's and not a parse error.
func TestInstallRefusesSparseEntries(t *testing.T) {
	const realSize = 64 << 20
	for name, archive := range map[string][]byte{
		"old GNU": oldGNUSparse(t, realSize),
		"PAX 1.0": paxSparse(t, realSize),
	} {
		t.Run(name, func(t *testing.T) {
			gz, err := gzip.NewReader(bytes.NewReader(archive))
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(gz)
			if _, err := tr.Next(); err != nil {
				t.Fatalf("test archive: %v", err)
			}
			if n, err := io.Copy(io.Discard, tr); err != nil || n != realSize {
				t.Fatalf("test archive: entry reads as %d bytes (%v), want %d", n, err, realSize)
			}
			parent := t.TempDir()
			err = Install(bytes.NewReader(archive), tgzArtifact, filepath.Join(parent, "v1"))
			checkRefused(t, err, parent, "is a sparse file")
		})
	}
}

// archive/tar delivers at most a header's Size per entry, so a Size that lies cannot make an
// entry write more: a Size too small turns the rest of the data into garbage headers, a Size
// too large runs into the end of the stream. Either way Install fails and leaves nothing.
func TestInstallHeaderSizeLies(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 2<<20)
	for name, size := range map[string]int64{"smaller than the data": 100, "larger than the data": 4 << 20} {
		t.Run(name, func(t *testing.T) {
			e := rawEntry(t, tar.Header{Name: "f", Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}, data, tar.TypeReg,
				func(blk []byte) { octal(blk[124:136], size) })
			archive := gzipped(t, e) // no trailer: the stream ends after the data
			parent := t.TempDir()
			err := InstallLimited(bytes.NewReader(archive), tgzArtifact, filepath.Join(parent, "v1"), Limits{MaxUnpackedBytes: 8 << 20})
			if err == nil {
				t.Fatal("Install succeeded")
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Fatalf("left behind: %v (err %v)", entries, err)
			}
		})
	}
}

// A wrong sha256 says "sha256 mismatch" with the spec's digest, never the digest of the bytes
// received (someone would copy it into the spec and bless whatever the origin served).
func TestFetchDigestMismatchHidesComputedDigest(t *testing.T) {
	body := []byte("served bytes")
	want := digest([]byte("expected bytes"))
	url := serve(t, body)
	parent := t.TempDir()
	err := NewHTTP().Fetch(context.Background(), &zklayout.Release{Artifact: zklayout.Artifact{URL: url + "/a", SHA256: want, Unpack: zklayout.UnpackNone}},
		filepath.Join(parent, "v"))
	if !errors.Is(err, artifact.ErrDigestMismatch) || !strings.Contains(err.Error(), "sha256 mismatch") || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v; want a sha256 mismatch naming %s", err, want)
	}
	if strings.Contains(err.Error(), digest(body)) {
		t.Fatalf("err = %v shows the computed digest", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}
