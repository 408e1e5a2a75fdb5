package pagecache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// DefaultPrewarmChunk is Prewarm's WILLNEED step when it is given chunk <= 0. One fadvise
// WILLNEED call reads ahead at most max(read_ahead_kb, max_sectors_kb) of the device, so one
// call for a whole file would warm only its first few hundred KiB or MiB.
const DefaultPrewarmChunk = 4 << 20

// Prewarm brings the regular files under dir (walked like Pinner.Pin does) into the page cache:
// it asks for read-ahead of each file with fadvise WILLNEED in steps of chunk bytes (<= 0:
// DefaultPrewarmChunk), then checks residency with mincore and reads whatever is still missing,
// so the files are resident when it returns (unless memory is short). It returns the bytes of
// the files it covered. A file that cannot be opened is skipped and reported in the joined
// error; the others are still warmed. It stops early, with ctx.Err(), when ctx ends.
//
// Nothing keeps the pages in memory afterwards: pin them (Pinner.Pin) to keep them.
func Prewarm(ctx context.Context, dir string, chunk int64) (int64, error) {
	if chunk <= 0 {
		chunk = DefaultPrewarmChunk
	}
	chunk = pageRoundUp(chunk)
	var (
		warmed int64
		errs   []error
		buf    []byte
	)
	skipped, err := eachFile(dir, func(path string, f *os.File, size int64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if buf == nil {
			buf = make([]byte, 1<<20)
		}
		n, err := prewarmFile(ctx, f, size, chunk, buf)
		warmed += n
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, err)
		}
		return nil
	})
	errs = append(errs, skipped...)
	if err != nil {
		errs = append(errs, err)
	}
	return warmed, errors.Join(errs...)
}

func prewarmFile(ctx context.Context, f *os.File, size, chunk int64, buf []byte) (int64, error) {
	fd := int(f.Fd())
	for off := int64(0); off < size; off += chunk {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := unix.Fadvise(fd, off, min(chunk, size-off), unix.FADV_WILLNEED); err != nil {
			return 0, &os.PathError{Op: "fadvise WILLNEED", Path: f.Name(), Err: err}
		}
	}
	// WILLNEED is advice: it is capped per call and dropped under memory or I/O pressure.
	// Read what is still missing (the reads wait for the read-ahead already in flight).
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
	}
	defer unix.Munmap(m)
	const window = 64 << 20 // mincore in windows, to notice ctx and keep the vector small
	vec := make([]byte, window/pageSize)
	for woff := int64(0); woff < size; woff += window {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		wlen := min(window, size-woff)
		pages := (wlen + pageSize - 1) / pageSize
		if err := mincore(m[woff:woff+wlen], vec[:pages]); err != nil {
			return 0, &os.PathError{Op: "mincore", Path: f.Name(), Err: err}
		}
		for i := int64(0); i < pages; {
			if vec[i]&1 != 0 {
				i++
				continue
			}
			j := i
			for j < pages && vec[j]&1 == 0 {
				j++
			}
			// Read pages [i, j) of the window.
			off, end := woff+i*pageSize, min(woff+j*pageSize, size)
			for off < end {
				n, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
				off += int64(n)
				if err == io.EOF {
					break // file shrank: the rest is gone
				}
				if err != nil {
					return 0, fmt.Errorf("prewarm: %w", err)
				}
			}
			i = j
		}
	}
	return size, nil
}
