package pagecache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultDropEvery is how many bytes a DropBehindWriter lets accumulate before it writes them
// back and drops them from the page cache.
const DefaultDropEvery = 8 << 20

// DropRange writes back the dirty pages of fd in [off, off+n) and waits for them
// (sync_file_range; fdatasync where that is not supported), then advises the kernel to drop
// the range from the page cache (fadvise DONTNEED). n == 0 means up to the end of the file.
// Pages that are mapped or locked by anyone (e.g. pinned by a Pinner) stay.
func DropRange(fd int, off, n int64) error {
	if err := unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ESPIPE) {
			return fmt.Errorf("sync_file_range: %w", err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			return fmt.Errorf("fdatasync: %w", err)
		}
	}
	if err := unix.Fadvise(fd, off, n, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise DONTNEED: %w", err)
	}
	return nil
}

// Drop writes back and drops the whole file at path from the page cache (see DropRange).
func Drop(path string) error {
	f, _, err := openRegular(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := DropRange(int(f.Fd()), 0, 0); err != nil {
		return &os.PathError{Op: "drop", Path: path, Err: err}
	}
	return nil
}

// DropBehindWriter writes to a file sequentially and keeps what it wrote out of the page cache,
// so a large download does not evict other (live) data: every `every` bytes it starts
// write-back of the bytes just written without waiting, and waits for and drops the window
// before (so writing rarely stalls on the disk). Flush writes back and drops the rest.
//
// It writes at the file's current offset, which must not move under it (no Seek, no O_APPEND
// onto a non-empty file). It does not own the file: close the file after Flush. Safe for
// concurrent use.
type DropBehindWriter struct {
	mu      sync.Mutex
	f       *os.File
	every   int64
	start   int64 // file offset where this writer began
	written int64 // bytes written through this writer
	synced  int64 // [start, start+synced): write-back started
	dropped int64 // [start, start+dropped): written back and dropped
	err     error // first drop error (writes continue; reported by Flush)
}

// NewDropBehindWriter wraps f; every <= 0 means DefaultDropEvery. f's current offset is where
// writing (and dropping) starts.
func NewDropBehindWriter(f *os.File, every int64) (*DropBehindWriter, error) {
	if every <= 0 {
		every = DefaultDropEvery
	}
	every = pageRoundUp(every)
	start, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("drop-behind writer: %w", err)
	}
	return &DropBehindWriter{f: f, every: every, start: start}, nil
}

// DropBehind wraps f with the default window (DefaultDropEvery).
func DropBehind(f *os.File) (*DropBehindWriter, error) { return NewDropBehindWriter(f, 0) }

// Write writes p to the file. Failing to drop pages is not a write error: it is remembered and
// returned by Flush.
func (w *DropBehindWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.f.Write(p)
	w.written += int64(n)
	for w.written-w.synced >= w.every {
		w.advance(w.synced + w.every)
	}
	return n, err
}

// advance starts write-back of [synced, upto), then writes back (waiting) and drops
// [dropped, synced). Called with mu held.
func (w *DropBehindWriter) advance(upto int64) {
	w.control(func(fd int) error {
		// Asynchronous write-back of the new window; errors surface in the waiting call below.
		_ = unix.SyncFileRange(fd, w.start+w.synced, upto-w.synced, unix.SYNC_FILE_RANGE_WRITE)
		if w.synced > w.dropped {
			if err := DropRange(fd, w.start+w.dropped, w.synced-w.dropped); err != nil {
				return err
			}
		}
		return nil
	})
	w.dropped = w.synced
	w.synced = upto
}

func (w *DropBehindWriter) control(fn func(fd int) error) {
	rc, err := w.f.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { err = fn(int(fd)) })
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("drop-behind %s: %w", w.f.Name(), err)
	}
}

// Flush writes back and drops everything written so far and returns the first error met while
// dropping, if any. Call it before closing the file (it does not close it).
func (w *DropBehindWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.written > w.dropped {
		// Length 0: up to the end of the file, so the last, partial page goes too.
		w.control(func(fd int) error { return DropRange(fd, w.start+w.dropped, 0) })
		w.dropped, w.synced = w.written, w.written
	}
	return w.err
}

// Written returns how many bytes were written through w.
func (w *DropBehindWriter) Written() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written
}
