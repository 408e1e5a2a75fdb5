package tracker

import (
	"errors"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// FuzzAssemble: whatever summary and chunks ZooKeeper holds, reassembly never panics and never
// returns more than the summary's (bounded) size.
func FuzzAssemble(f *testing.F) {
	f.Add(100, 1, []byte("0123456789"), uint16(10))
	f.Add(1<<62, 1<<43, []byte("x"), uint16(1))
	f.Add(-1, 0, []byte{}, uint16(0))
	f.Add(zklayout.MetaChunkSize+1, 2, []byte("abc"), uint16(2))
	f.Fuzz(func(t *testing.T, metaSize, chunks int, data []byte, chunkLen uint16) {
		tor := zklayout.Torrent{MetaSize: metaSize, Chunks: chunks}
		meta, err := Assemble(tor, func(i int) ([]byte, error) {
			// The chunks are data cut in chunkLen pieces, then empty.
			n := int(chunkLen)
			if n == 0 || i*n >= len(data) {
				return nil, nil
			}
			return data[i*n : min(len(data), (i+1)*n)], nil
		})
		if err != nil {
			if !errors.Is(err, zklayout.ErrMalformed) {
				t.Fatalf("Assemble error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if len(meta) != metaSize || metaSize > zklayout.MaxMetaSize {
			t.Fatalf("Assemble returned %d bytes for metaSize %d", len(meta), metaSize)
		}
	})
}
