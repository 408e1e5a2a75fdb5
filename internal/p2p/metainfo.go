package p2p

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/url"
	"os"
	"strings"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// Piece length bounds and target used by [PieceLength].
const (
	// MinPieceLength and MaxPieceLength bound the piece lengths a metainfo may have.
	MinPieceLength = 16 << 10 // one BitTorrent chunk
	MaxPieceLength = 16 << 20
	// BuildMinPieceLength is the smallest piece length BuildMetaInfo picks. Every piece costs
	// each peer a hash job, a completion record, a Have to every connection and a request-order
	// update: with 16 KiB pieces, eight nodes fetching 32 MiB at 4 MiB/s each kept two cores
	// busy (make bench-distribution); 256 KiB pieces halve that, and still give a 32 MiB file
	// 128 pieces to spread over a swarm.
	BuildMinPieceLength = 256 << 10
	// TargetMaxPieces is the piece count PieceLength stays at or below while it can: a
	// power-of-two piece length gives between TargetMaxPieces/2 and TargetMaxPieces pieces
	// between the two length bounds (fewer for files under 512 MiB, more above 32 GiB).
	TargetMaxPieces = 2048
)

// MetaInfo is a single-file, BitTorrent v1 torrent.
type MetaInfo struct {
	// Bytes is the bencoded .torrent file.
	Bytes []byte
	// InfoHash is the v1 info hash in lower-case hex (40 digits).
	InfoHash string
	// Name is the file name from the info dictionary (one path element).
	Name        string
	Size        int64
	PieceLength int64
	NumPieces   int
	// WebSeeds are the BEP 19 URLs (url-list).
	WebSeeds []string

	info    metainfo.Info
	rawInfo []byte
	hash    metainfo.Hash
}

// PieceLength returns the piece length for a file of the given size: the smallest power of two
// giving at most TargetMaxPieces pieces, clamped to [BuildMinPieceLength, MaxPieceLength].
func PieceLength(size int64) int64 {
	if size <= 0 {
		return BuildMinPieceLength
	}
	want := (size + TargetMaxPieces - 1) / TargetMaxPieces
	pl := int64(1) << bits.Len64(uint64(want-1)) // next power of two ≥ want
	return min(max(pl, BuildMinPieceLength), MaxPieceLength)
}

// BuildMetaInfo hashes the file at path and returns its metainfo. name is the file name peers
// store it under (one path element); webSeeds are http(s) URLs serving the same bytes (BEP 19:
// a URL ending in "/" gets name appended). The output is deterministic (no creation date), so
// two builders of the same file publish identical bytes. ctx is checked between pieces.
func BuildMetaInfo(ctx context.Context, path, name string, webSeeds []string) (MetaInfo, error) {
	if err := checkName(name); err != nil {
		return MetaInfo{}, err
	}
	if err := checkWebSeeds(webSeeds); err != nil {
		return MetaInfo{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return MetaInfo{}, fmt.Errorf("build metainfo: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return MetaInfo{}, fmt.Errorf("build metainfo: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return MetaInfo{}, fmt.Errorf("build metainfo: %s is not a regular file", path)
	}
	size := fi.Size()
	if size == 0 {
		return MetaInfo{}, fmt.Errorf("build metainfo: %s is empty", path)
	}
	pl := PieceLength(size)
	n := (size + pl - 1) / pl
	pieces := make([]byte, 0, n*sha1.Size)
	buf := make([]byte, pl)
	var read int64
	for read < size {
		if err := ctx.Err(); err != nil {
			return MetaInfo{}, fmt.Errorf("build metainfo: %w", err)
		}
		m, err := io.ReadFull(f, buf[:min(pl, size-read)])
		if err != nil {
			return MetaInfo{}, fmt.Errorf("build metainfo: reading %s (changed while hashing?): %w", path, err)
		}
		sum := sha1.Sum(buf[:m])
		pieces = append(pieces, sum[:]...)
		read += int64(m)
	}
	if extra, _ := f.Read(buf[:1]); extra != 0 {
		return MetaInfo{}, fmt.Errorf("build metainfo: %s grew while hashing", path)
	}
	info := metainfo.Info{Name: name, Length: size, PieceLength: pl, Pieces: pieces}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		return MetaInfo{}, fmt.Errorf("build metainfo: %w", err)
	}
	mi := metainfo.MetaInfo{InfoBytes: infoBytes, UrlList: webSeeds}
	var out bytes.Buffer
	if err := mi.Write(&out); err != nil {
		return MetaInfo{}, fmt.Errorf("build metainfo: %w", err)
	}
	return ParseMetaInfo(out.Bytes())
}

// ErrBadMetaInfo is wrapped by ParseMetaInfo's errors.
var ErrBadMetaInfo = errors.New("invalid metainfo")

// ParseMetaInfo decodes and validates a .torrent file: bencode without trailing bytes, a v1
// single-file info dictionary with a safe name, a positive length, a power-of-two piece length
// within [MinPieceLength, MaxPieceLength], one SHA-1 per piece, and http(s) web seeds.
func ParseMetaInfo(b []byte) (MetaInfo, error) {
	bad := func(format string, args ...any) (MetaInfo, error) {
		return MetaInfo{}, fmt.Errorf("%w: "+format, append([]any{ErrBadMetaInfo}, args...)...)
	}
	var mi metainfo.MetaInfo
	if err := bencode.Unmarshal(b, &mi); err != nil {
		return bad("%v", err)
	}
	if len(mi.InfoBytes) == 0 {
		return bad("no info dictionary")
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return bad("info: %v", err)
	}
	switch {
	case info.HasV2() || info.MetaVersion > 1:
		return bad("BitTorrent v2 torrents are not supported")
	case len(info.Files) != 0:
		return bad("multi-file torrents are not supported")
	case info.Length <= 0:
		return bad("length %d", info.Length)
	case info.PieceLength < MinPieceLength || info.PieceLength > MaxPieceLength ||
		info.PieceLength&(info.PieceLength-1) != 0:
		return bad("piece length %d", info.PieceLength)
	}
	if err := checkName(info.Name); err != nil {
		return bad("%v", err)
	}
	numPieces := (info.Length + info.PieceLength - 1) / info.PieceLength
	if int64(len(info.Pieces)) != numPieces*sha1.Size {
		return bad("%d bytes of piece hashes for %d pieces", len(info.Pieces), numPieces)
	}
	if err := checkWebSeeds(mi.UrlList); err != nil {
		return bad("%v", err)
	}
	h := mi.HashInfoBytes()
	return MetaInfo{
		Bytes:       bytes.Clone(b),
		InfoHash:    h.HexString(),
		Name:        info.Name,
		Size:        info.Length,
		PieceLength: info.PieceLength,
		NumPieces:   int(numPieces),
		WebSeeds:    append([]string(nil), mi.UrlList...),
		info:        info,
		rawInfo:     bytes.Clone(mi.InfoBytes),
		hash:        h,
	}, nil
}

// pieceSize is the length of piece i (the last one may be shorter).
func (mi MetaInfo) pieceSize(i int) int64 {
	return min(mi.PieceLength, mi.Size-int64(i)*mi.PieceLength)
}

func (mi MetaInfo) valid() error {
	if len(mi.rawInfo) == 0 {
		return fmt.Errorf("%w: not built by BuildMetaInfo or ParseMetaInfo", ErrBadMetaInfo)
	}
	return nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("file name %q is not a single path element", name)
	}
	return nil
}

func checkWebSeeds(urls []string) error {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("web seed %q: %w", s, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("web seed %q: want an http or https URL", s)
		}
	}
	return nil
}
