package p2p

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

func TestPieceLength(t *testing.T) {
	const KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
	for _, tc := range []struct {
		size, want int64
	}{
		{0, 256 * KiB},
		{1, 256 * KiB},
		{1 * MiB, 256 * KiB},
		{32 * MiB, 256 * KiB},    // 128 pieces
		{100 * MiB, 256 * KiB},   // 400 pieces
		{512 * MiB, 256 * KiB},   // 2048 pieces
		{512*MiB + 1, 512 * KiB}, // 1025 pieces
		{1 * GiB, 512 * KiB},     // 2048 pieces
		{3 * GiB, 2 * MiB},       // 1536 pieces
		{32 * GiB, 16 * MiB},     // 2048 pieces
		{100 * GiB, 16 * MiB},    // capped: 6400 pieces
	} {
		got := PieceLength(tc.size)
		if got != tc.want {
			t.Errorf("PieceLength(%d) = %d, want %d", tc.size, got, tc.want)
		}
		if n := (tc.size + got - 1) / got; tc.size > 512*MiB && tc.size <= 32*GiB && (n <= TargetMaxPieces/2 || n > TargetMaxPieces) {
			t.Errorf("PieceLength(%d): %d pieces", tc.size, n)
		}
	}
}

func TestBuildParseMetaInfo(t *testing.T) {
	dir := t.TempDir()
	src, _ := writeRandomFile(t, dir, "x", 3*BuildMinPieceLength+5)
	mi, err := BuildMetaInfo(context.Background(), src, "svc-1.2.3.tar.gz", []string{"https://origin.example/a/"})
	if err != nil {
		t.Fatal(err)
	}
	if mi.Size != 3*BuildMinPieceLength+5 || mi.PieceLength != BuildMinPieceLength || mi.NumPieces != 4 || mi.Name != "svc-1.2.3.tar.gz" ||
		len(mi.InfoHash) != 40 || len(mi.WebSeeds) != 1 {
		t.Fatalf("unexpected metainfo %+v", mi)
	}
	again, err := BuildMetaInfo(context.Background(), src, "svc-1.2.3.tar.gz", []string{"https://origin.example/a/"})
	if err != nil || !bytes.Equal(again.Bytes, mi.Bytes) {
		t.Fatalf("BuildMetaInfo is not deterministic (%v)", err)
	}
	parsed, err := ParseMetaInfo(mi.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.InfoHash != mi.InfoHash || parsed.Size != mi.Size || parsed.PieceLength != mi.PieceLength {
		t.Fatalf("round trip: %+v vs %+v", parsed, mi)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := BuildMetaInfo(ctx, src, "n", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string]struct {
		path, name string
		ws         []string
	}{
		"empty file": {empty, "n", nil},
		"missing":    {filepath.Join(dir, "nope"), "n", nil},
		"directory":  {dir, "n", nil},
		"bad name":   {src, "a/b", nil},
		"dot name":   {src, "..", nil},
		"ftp seed":   {src, "n", []string{"ftp://x/"}},
	} {
		if _, err := BuildMetaInfo(context.Background(), args.path, args.name, args.ws); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseMetaInfoRejects(t *testing.T) {
	dir := t.TempDir()
	src, _ := writeRandomFile(t, dir, "x", 2*BuildMinPieceLength+40<<10)
	good, err := BuildMetaInfo(context.Background(), src, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	encode := func(info metainfo.Info, urls ...string) []byte {
		ib, err := bencode.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bencode.Marshal(metainfo.MetaInfo{InfoBytes: ib, UrlList: urls})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	info := good.info
	mod := func(f func(*metainfo.Info)) metainfo.Info {
		i := info
		f(&i)
		return i
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"garbage":        []byte("this is not bencode"),
		"truncated":      good.Bytes[:len(good.Bytes)/2],
		"trailing bytes": append(bytes.Clone(good.Bytes), 'x'),
		"not a dict":     []byte("i42e"),
		"no info":        []byte("d8:announce3:fooe"),
		"multi-file": encode(mod(func(i *metainfo.Info) {
			i.Length = 0
			i.Files = []metainfo.FileInfo{{Length: 2*BuildMinPieceLength + 40<<10, Path: []string{"a"}}}
		})),
		"zero length":      encode(mod(func(i *metainfo.Info) { i.Length = 0 })),
		"odd piece len":    encode(mod(func(i *metainfo.Info) { i.PieceLength = 20000 })),
		"tiny piece len":   encode(mod(func(i *metainfo.Info) { i.PieceLength = 8192 })),
		"missing hashes":   encode(mod(func(i *metainfo.Info) { i.Pieces = i.Pieces[:20] })),
		"path in name":     encode(mod(func(i *metainfo.Info) { i.Name = "../etc/passwd" })),
		"empty name":       encode(mod(func(i *metainfo.Info) { i.Name = "" })),
		"v2":               encode(mod(func(i *metainfo.Info) { i.MetaVersion = 2 })),
		"bad web seed":     encode(info, "file:///etc/passwd"),
		"web seed no host": encode(info, "http:///x"),
	} {
		if _, err := ParseMetaInfo(b); !errors.Is(err, ErrBadMetaInfo) {
			t.Errorf("%s: %v, want ErrBadMetaInfo", name, err)
		}
	}
	if _, err := ParseMetaInfo(encode(info, "http://origin/x")); err != nil {
		t.Errorf("valid re-encoding rejected: %v", err)
	}
}
