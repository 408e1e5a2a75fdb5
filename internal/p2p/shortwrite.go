package p2p

import (
	"context"
	"errors"
	"io"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// fixShortWrite wraps file storage to undo a v1.61.0 quirk of classic file I/O: hashing a piece
// copies it through a writer limited to the piece's length (storage.limitWriter) from
// os.File.WriteTo, which reads 32 KiB at a time; whenever the file extends past the piece, the
// limited writer receives more than it may take and the whole piece write reports
// io.ErrShortWrite although every byte of the piece was hashed. The library then
//   - logs "finished hashing piece" at Warn for nearly every piece, and
//   - treats the hash as a storage error: smart banning (blaming the peers whose blocks differ
//     from a verified piece) is skipped, and a peer that alone sent a piece failing its hash is
//     not banned either (torrent.go: finishHash, pieceHashed). Banning then works only for
//     pieces at the current end of the file.
//
// The wrapper reports such a write as complete when the whole piece was written.
type fixShortWrite struct {
	storage.ClientImpl
}

func (c fixShortWrite) OpenTorrent(ctx context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	ti, err := c.ClientImpl.OpenTorrent(ctx, info, ih)
	if err != nil {
		return ti, err
	}
	if ti.PieceWithHash != nil || ti.Piece == nil {
		return ti, errors.New("p2p: unexpected file storage implementation")
	}
	piece := ti.Piece
	ti.Piece = func(p metainfo.Piece) storage.PieceImpl {
		pi := piece(p)
		if _, ok := pi.(io.WriterTo); !ok {
			return pi
		}
		return fixShortWritePiece{pi, p.Length()}
	}
	return ti, nil
}

type fixShortWritePiece struct {
	storage.PieceImpl
	length int64
}

func (p fixShortWritePiece) WriteTo(w io.Writer) (int64, error) {
	n, err := p.PieceImpl.(io.WriterTo).WriteTo(w)
	if errors.Is(err, io.ErrShortWrite) && n == p.length {
		err = nil
	}
	return n, err
}
