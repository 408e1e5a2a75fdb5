package pagecache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// ErrNoLockCapability is matched (errors.Is) by Pin's error when the kernel refuses to lock
// memory because the process lacks CAP_IPC_LOCK and RLIMIT_MEMLOCK is too small. The caller
// should say so once and carry on unpinned.
var ErrNoLockCapability = errors.New("cannot lock memory: the agent needs CAP_IPC_LOCK (or a larger RLIMIT_MEMLOCK) to pin files; continuing unpinned")

// ErrClosed is returned by Pin after Close.
var ErrClosed = errors.New("pagecache: pinner closed")

// lockChunk is how much Pin locks per mlock call (ctx is checked between calls, and read-ahead
// for the next chunk is requested before locking the current one).
const lockChunk = 16 << 20

// Pinned describes what one Pin call locked in memory. It is a value; hand it back to Unpin
// (or HoldFor). The zero Pinned is valid and pins nothing.
type Pinned struct {
	Dir string
	// Files pinned, in the order they were pinned; the last one may be pinned only in part.
	Files []PinnedFile
	// Bytes of memory locked (whole pages; counted against the budget).
	Bytes int64
	// Skipped: bytes of files under Dir left unpinned because the budget was used up.
	Skipped int64

	id uint64
}

// PinnedFile is one file (or its first Bytes bytes) locked in memory.
type PinnedFile struct {
	Path  string
	Bytes int64 // file bytes covered (from offset 0)
	Size  int64 // file size
}

// Pinner locks files in memory (mmap PROT_READ, MAP_SHARED + mlock) within a byte budget
// shared by all its pins. It is safe for concurrent use.
type Pinner struct {
	budget int64
	log    logr.Logger

	// mlock and munlock are the system calls, replaceable in tests.
	mlock   func([]byte) error
	munlock func([]byte) error

	mu       sync.Mutex
	reserved int64 // budget taken by pins, including Pin calls in progress
	pinned   int64 // locked bytes of finished Pin calls (what PinnedBytes reports)
	nextID   uint64
	sets     map[uint64]*pinSet
	closed   bool
}

type pinSet struct {
	maps  [][]byte
	bytes int64
	done  chan struct{} // closed when unpinned
}

// New returns a Pinner that locks at most budget bytes of memory in total (whole pages).
// budget <= 0 disables pinning: Pin pins nothing and returns no error.
func New(budget int64, log logr.Logger) *Pinner {
	return &Pinner{budget: max(budget, 0), log: log, mlock: unix.Mlock, munlock: unix.Munlock, sets: map[uint64]*pinSet{}}
}

// Pin maps and locks the regular files under dir (or dir itself if it is a regular file), in
// walk (lexical) order, until the Pinner's
// budget is used up; the file that crosses the budget is pinned in part (from its start).
// Symbolic links are followed only to regular files inside dir; sockets, pipes and devices are
// skipped; a file reached twice (hard or symbolic link) is pinned once. Locking reads the files
// from disk as needed.
//
// The returned Pinned is valid whatever the error, and what it lists stays locked until Unpin,
// HoldFor or Close. Errors:
//   - errors.Is(err, ErrNoLockCapability): the kernel refused to lock (no CAP_IPC_LOCK); Pin
//     stops there, keeping whatever the rlimit allowed before. Log it and go on unpinned.
//   - ctx ended: everything this call locked is released and ctx.Err() is returned.
//   - files that could not be opened, mapped or locked are skipped and joined into the error.
//   - ErrClosed after Close.
func (p *Pinner) Pin(ctx context.Context, dir string) (Pinned, error) {
	res := Pinned{Dir: dir}
	set := &pinSet{done: make(chan struct{})}
	var (
		errs []error
		stop error // ends the walk: capability missing or ctx done
	)
	release := func() {
		p.mu.Lock()
		p.reserved -= set.bytes
		p.mu.Unlock()
		p.unmapAll(set.maps)
	}
	skipped, werr := eachFile(dir, func(path string, f *os.File, size int64) error {
		if err := ctx.Err(); err != nil {
			stop = err
			return err
		}
		// Reserve budget for this file, or the part of it that fits.
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			stop = ErrClosed
			return stop
		}
		free := (p.budget - p.reserved) &^ (pageSize - 1)
		want := min(pageRoundUp(size), free)
		p.reserved += want
		p.mu.Unlock()
		length := min(size, want)
		res.Skipped += size - length
		if length <= 0 {
			return nil // budget used up; keep walking to count Skipped
		}

		m, err := unix.Mmap(int(f.Fd()), 0, int(length), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			p.unreserve(want)
			errs = append(errs, &os.PathError{Op: "mmap", Path: path, Err: err})
			return nil
		}
		if err := p.lockMapping(ctx, int(f.Fd()), m); err != nil {
			p.unreserve(want)
			p.unmapAll([][]byte{m})
			switch {
			case ctx.Err() != nil:
				stop = ctx.Err()
			case errors.Is(err, ErrNoLockCapability):
				stop = &os.PathError{Op: "mlock", Path: path, Err: err}
			default:
				errs = append(errs, &os.PathError{Op: "mlock", Path: path, Err: err})
				return nil
			}
			return stop
		}
		set.maps = append(set.maps, m)
		set.bytes += want
		res.Files = append(res.Files, PinnedFile{Path: path, Bytes: length, Size: size})
		return nil
	})
	if stop != nil && ctx.Err() != nil {
		release()
		return Pinned{Dir: dir}, ctx.Err()
	}
	errs = append(errs, skipped...)
	if werr != nil && werr != stop {
		errs = append(errs, werr)
	}
	if stop != nil {
		errs = append([]error{stop}, errs...)
	}
	res.Bytes = set.bytes

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		release()
		return Pinned{Dir: dir}, ErrClosed
	}
	if len(set.maps) > 0 {
		p.nextID++
		res.id = p.nextID
		p.sets[res.id] = set
		p.pinned += set.bytes
	}
	p.mu.Unlock()
	p.log.V(1).Info("pinned", "dir", dir, "files", len(res.Files), "bytes", res.Bytes, "skipped", res.Skipped)
	return res, errors.Join(errs...)
}

// lockMapping locks m (a mapping of fd from offset 0) chunk by chunk, asking for read-ahead of
// the next chunk before locking the current one.
func (p *Pinner) lockMapping(ctx context.Context, fd int, m []byte) error {
	n := int64(len(m))
	_ = unix.Fadvise(fd, 0, min(lockChunk, n), unix.FADV_WILLNEED)
	for off := int64(0); off < n; off += lockChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min(off+lockChunk, n)
		if end < n {
			_ = unix.Fadvise(fd, end, min(lockChunk, n-end), unix.FADV_WILLNEED)
		}
		if err := p.mlock(m[off:end]); err != nil {
			return classifyLockError(err)
		}
	}
	return nil
}

// classifyLockError maps mlock's EPERM (RLIMIT_MEMLOCK is 0) and ENOMEM (over RLIMIT_MEMLOCK)
// to ErrNoLockCapability when the process does not have CAP_IPC_LOCK in its effective set.
// With the capability, ENOMEM means something else (e.g. too many mappings) and is kept.
func classifyLockError(err error) error {
	if (errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOMEM)) && !hasCapIPCLock() {
		return fmt.Errorf("%w (%v)", ErrNoLockCapability, err)
	}
	return err
}

// hasCapIPCLock reports whether the calling thread has CAP_IPC_LOCK in its effective set.
var hasCapIPCLock = func() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_IPC_LOCK/32].Effective&(1<<(unix.CAP_IPC_LOCK%32)) != 0
}

func (p *Pinner) unreserve(n int64) {
	p.mu.Lock()
	p.reserved -= n
	p.mu.Unlock()
}

// unmapAll unlocks and unmaps mappings; failures are logged (they would mean a bug).
func (p *Pinner) unmapAll(maps [][]byte) {
	for _, m := range maps {
		if err := p.munlock(m); err != nil {
			p.log.Error(err, "munlock failed", "bytes", len(m))
		}
		if err := unix.Munmap(m); err != nil {
			p.log.Error(err, "munmap failed", "bytes", len(m))
		}
	}
}

// Unpin unlocks and unmaps what pin locked and returns its bytes to the budget. Unpinning
// twice, or a zero Pinned, does nothing.
func (p *Pinner) Unpin(pin Pinned) {
	p.mu.Lock()
	set, ok := p.sets[pin.id]
	if ok {
		delete(p.sets, pin.id)
		p.pinned -= set.bytes
		p.reserved -= set.bytes
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	p.unmapAll(set.maps)
	close(set.done)
	p.log.V(1).Info("unpinned", "dir", pin.Dir, "bytes", set.bytes)
}

// HoldFor keeps pin locked for d, then unpins it: call it when the new version has become
// healthy, to keep it hot for the configured time after its restart. It returns early, after
// unpinning, with ctx.Err() when ctx ends, and returns nil at once if pin gets unpinned
// meanwhile (e.g. by a rollback calling Unpin). It blocks; run it in a goroutine if needed.
func (p *Pinner) HoldFor(ctx context.Context, pin Pinned, d time.Duration) error {
	p.mu.Lock()
	set, ok := p.sets[pin.id]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-set.done:
		return nil
	case <-ctx.Done():
		p.Unpin(pin)
		return ctx.Err()
	}
	p.Unpin(pin)
	return nil
}

// PinnedBytes returns the memory currently locked by finished Pin calls, for reporting.
func (p *Pinner) PinnedBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pinned
}

// Close unpins everything; Pin fails with ErrClosed afterwards (a Pin in progress releases
// what it locked).
func (p *Pinner) Close() error {
	p.mu.Lock()
	p.closed = true
	sets := p.sets
	p.sets = map[uint64]*pinSet{}
	for _, s := range sets {
		p.pinned -= s.bytes
		p.reserved -= s.bytes
	}
	p.mu.Unlock()
	for _, s := range sets {
		p.unmapAll(s.maps)
		close(s.done)
	}
	return nil
}
