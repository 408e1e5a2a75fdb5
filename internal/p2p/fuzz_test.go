package p2p

import (
	"context"
	"crypto/sha1"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// zklayout checks torrent summaries against the piece lengths the seeder builds without
// importing this package: the constants must agree.
func TestPieceLengthBoundsMatchZklayout(t *testing.T) {
	if MinPieceLength != zklayout.MinPieceLength || MaxPieceLength != zklayout.MaxPieceLength {
		t.Fatalf("piece length bounds %d..%d, zklayout says %d..%d", MinPieceLength, MaxPieceLength, zklayout.MinPieceLength, zklayout.MaxPieceLength)
	}
}

// FuzzParseMetaInfo: metainfo from ZooKeeper never panics the parser; what it accepts is
// self-consistent and parses again to the same torrent.
func FuzzParseMetaInfo(f *testing.F) {
	dir := f.TempDir()
	for i, size := range []int{1, 16 << 10, 100_000} {
		path := filepath.Join(dir, "a")
		if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
			f.Fatal(err)
		}
		var seeds []string
		if i == 1 {
			seeds = []string{"http://origin.example.com/artifacts/"}
		}
		mi, err := BuildMetaInfo(context.Background(), path, "app.tar.gz", seeds)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(mi.Bytes)
	}
	f.Add([]byte("d4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee"))
	f.Add([]byte("d4:infod6:lengthi-1e4:name2:..12:piece lengthi3e6:pieces0:ee"))
	f.Add([]byte("d4:infod5:filesle4:name1:a12:piece lengthi16384e6:pieces0:ee"))
	f.Add([]byte("d4:infod6:lengthi9223372036854775807e4:name1:a12:piece lengthi16777216e6:pieces0:ee"))
	f.Add([]byte("d4:infoi1ee"))
	f.Add([]byte("l"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mi, err := ParseMetaInfo(b)
		if err != nil {
			if !errors.Is(err, ErrBadMetaInfo) {
				t.Fatalf("error does not wrap ErrBadMetaInfo: %v", err)
			}
			return
		}
		if mi.Size <= 0 || mi.NumPieces < 1 || int64(mi.NumPieces-1)*mi.PieceLength >= mi.Size ||
			int64(mi.NumPieces)*mi.PieceLength < mi.Size || len(mi.info.Pieces) != mi.NumPieces*sha1.Size {
			t.Fatalf("inconsistent metainfo: size %d, %d pieces of %d", mi.Size, mi.NumPieces, mi.PieceLength)
		}
		if err := checkName(mi.Name); err != nil {
			t.Fatal(err)
		}
		again, err := ParseMetaInfo(mi.Bytes)
		if err != nil || again.InfoHash != mi.InfoHash {
			t.Fatalf("reparse: %v, %s vs %s", err, again.InfoHash, mi.InfoHash)
		}
	})
}
