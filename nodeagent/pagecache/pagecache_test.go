package pagecache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/sys/unix"
)

const MiB = 1 << 20

// diskDir returns an empty directory on a file system backed by a disk: on tmpfs the page
// cache is the file, so DONTNEED and WILLNEED do nothing and these tests would mean nothing.
// It tries t.TempDir(), then /var/tmp, then the repository's bin/.
func diskDir(t *testing.T) string {
	t.Helper()
	candidates := []string{t.TempDir(), "/var/tmp"}
	if wd, err := os.Getwd(); err == nil {
		candidates = append(candidates, filepath.Join(wd, "..", "..", "bin"))
	}
	for i, c := range candidates {
		if mem, err := InMemoryFS(c); err != nil || mem {
			continue
		}
		if i == 0 {
			return c
		}
		d, err := os.MkdirTemp(c, "pagecache-test-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	t.Fatal("no disk-backed directory among TMPDIR, /var/tmp and bin/ (tmpfs everywhere): page-cache behaviour cannot be tested")
	return ""
}

// writeFile writes size pseudo-random bytes to path, makes them durable and drops them from
// the page cache, so the file starts cold.
func writeFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, io.LimitReader(newRandReader(seed), size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := Drop(path); err != nil {
		t.Fatal(err)
	}
}

type randReader struct{ r *rand.ChaCha8 }

func newRandReader(seed uint64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return &randReader{rand.NewChaCha8(s)}
}

func (r *randReader) Read(p []byte) (int, error) { return r.r.Read(p) }

func resident(t *testing.T, path string) (res, total int64) {
	t.Helper()
	res, total, err := Resident(path)
	if err != nil {
		t.Fatal(err)
	}
	return res, total
}

func pct(res, total int64) float64 {
	if total == 0 {
		return 100
	}
	return 100 * float64(res) / float64(total)
}

// vmLocked returns the process's locked memory (VmLck in /proc/self/status), in bytes.
func vmLocked(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmLck:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return 0
}

// needLock fails tests that lock more than RLIMIT_MEMLOCK when the process cannot: the tests,
// like the agent, run as root (CI does); the no-capability path has its own test.
func needLock(t *testing.T, bytes int64) {
	t.Helper()
	if hasCapIPCLock() {
		return
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY && int64(rl.Cur) < bytes+8*MiB {
		t.Fatalf("needs CAP_IPC_LOCK (run as root) or RLIMIT_MEMLOCK >= %d (have %d)", bytes+8*MiB, rl.Cur)
	}
}

func TestPinKeepsFileResidentUnpinReleases(t *testing.T) {
	needLock(t, 16*MiB)
	dir := diskDir(t)
	live := filepath.Join(dir, "live")
	path := filepath.Join(live, "data")
	writeFile(t, path, 16*MiB, 1)
	if r, n := resident(t, path); pct(r, n) > 10 {
		t.Fatalf("file should start cold, %.0f%% resident", pct(r, n))
	}

	p := New(64*MiB, testr.New(t))
	defer p.Close()
	lockedBefore := vmLocked(t)
	start := time.Now()
	pin, err := p.Pin(context.Background(), live)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pinned %d bytes of cold 16 MiB in %v", pin.Bytes, time.Since(start))
	if pin.Bytes != 16*MiB || len(pin.Files) != 1 || pin.Files[0].Path != path || pin.Skipped != 0 {
		t.Fatalf("pinned %+v", pin)
	}
	if got := p.PinnedBytes(); got != 16*MiB {
		t.Fatalf("PinnedBytes = %d", got)
	}
	if d := vmLocked(t) - lockedBefore; d < 16*MiB {
		t.Fatalf("VmLck grew by %d, want >= 16 MiB", d)
	}
	if r, n := resident(t, path); r != n {
		t.Fatalf("pinned file %d/%d resident", r, n)
	}
	if err := Drop(path); err != nil {
		t.Fatal(err)
	}
	if r, n := resident(t, path); r != n {
		t.Fatalf("pinned file evicted by DONTNEED: %d/%d resident", r, n)
	}

	p.Unpin(pin)
	p.Unpin(pin) // twice: no-op
	if got := p.PinnedBytes(); got != 0 {
		t.Fatalf("PinnedBytes after Unpin = %d", got)
	}
	if d := vmLocked(t) - lockedBefore; d > 0 {
		t.Fatalf("VmLck still %d above the start after Unpin", d)
	}
	if err := Drop(path); err != nil {
		t.Fatal(err)
	}
	if r, n := resident(t, path); pct(r, n) > 10 {
		t.Fatalf("after Unpin + DONTNEED still %.0f%% resident", pct(r, n))
	}
}

func TestPinBudgetAndWalk(t *testing.T) {
	needLock(t, 10*MiB)
	dir := diskDir(t)
	svc := filepath.Join(dir, "svc")
	for i, name := range []string{"a", "b", "c/d", "e"} {
		writeFile(t, filepath.Join(svc, name), 4*MiB, uint64(10+i))
	}
	outside := filepath.Join(dir, "outside")
	writeFile(t, outside, 4*MiB, 20)
	must(t, os.Symlink(outside, filepath.Join(svc, "escape")))                  // escapes: skipped
	must(t, os.Symlink("../a", filepath.Join(svc, "c", "link-a")))              // inside, same file as a: once
	must(t, os.Symlink(filepath.Join(svc, "c"), filepath.Join(svc, "dirlink"))) // directory: not followed
	must(t, unix.Mkfifo(filepath.Join(svc, "fifo"), 0o644))                     // skipped, and Pin must not block on it
	if l, err := net.Listen("unix", filepath.Join(svc, "sock")); err == nil {
		defer l.Close()
	}
	writeFile(t, filepath.Join(svc, "empty"), 0, 0)

	p := New(10*MiB, testr.New(t))
	defer p.Close()
	pin, err := p.Pin(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pinned %+v", pin.Files)
	if pin.Bytes != 10*MiB || p.PinnedBytes() != 10*MiB {
		t.Fatalf("pinned %d bytes (PinnedBytes %d), want the budget, 10 MiB", pin.Bytes, p.PinnedBytes())
	}
	if pin.Skipped != 16*MiB-10*MiB {
		t.Fatalf("Skipped = %d, want 6 MiB", pin.Skipped)
	}
	// Walk order: a, b fully, c/d in part.
	want := []PinnedFile{{filepath.Join(svc, "a"), 4 * MiB, 4 * MiB}, {filepath.Join(svc, "b"), 4 * MiB, 4 * MiB}, {filepath.Join(svc, "c", "d"), 2 * MiB, 4 * MiB}}
	if len(pin.Files) != len(want) {
		t.Fatalf("files %+v, want %+v", pin.Files, want)
	}
	for i := range want {
		if pin.Files[i] != want[i] {
			t.Fatalf("files %+v, want %+v", pin.Files, want)
		}
	}
	if r, _ := resident(t, filepath.Join(svc, "c", "d")); r < 2*MiB {
		t.Fatalf("partly pinned file: %d resident, want >= 2 MiB", r)
	}

	// The budget is shared: a second Pin gets nothing until the first is unpinned.
	pin2, err := p.Pin(context.Background(), svc)
	if err != nil || pin2.Bytes != 0 || len(pin2.Files) != 0 || pin2.Skipped != 16*MiB {
		t.Fatalf("second Pin over budget: %+v, %v", pin2, err)
	}
	p.Unpin(pin2) // zero pin: no-op
	p.Unpin(pin)
	// A single file works too (an artifact that is not an archive).
	pinE, err := p.Pin(context.Background(), filepath.Join(svc, "e"))
	if err != nil || pinE.Bytes != 4*MiB || len(pinE.Files) != 1 {
		t.Fatalf("Pin of a single file: %+v, %v", pinE, err)
	}
	pin3, err := p.Pin(context.Background(), filepath.Join(svc, "c"))
	if err != nil || pin3.Bytes != 4*MiB || len(pin3.Files) != 1 {
		t.Fatalf("Pin after Unpin: %+v, %v", pin3, err)
	}
}

func TestPinConcurrentWithinBudget(t *testing.T) {
	needLock(t, 12*MiB)
	dir := diskDir(t)
	var dirs []string
	for i := range 6 {
		d := filepath.Join(dir, "v"+strconv.Itoa(i))
		writeFile(t, filepath.Join(d, "f"), 4*MiB, uint64(30+i))
		dirs = append(dirs, d)
	}
	p := New(12*MiB, testr.New(t))
	var wg sync.WaitGroup
	pins := make([]Pinned, len(dirs))
	for i, d := range dirs {
		wg.Go(func() {
			var err error
			if pins[i], err = p.Pin(context.Background(), d); err != nil {
				t.Error(err)
			}
			_ = p.PinnedBytes()
		})
	}
	wg.Wait()
	var sum int64
	for _, pin := range pins {
		sum += pin.Bytes
	}
	if sum != 12*MiB || p.PinnedBytes() != 12*MiB {
		t.Fatalf("concurrent pins locked %d (PinnedBytes %d), want exactly the 12 MiB budget", sum, p.PinnedBytes())
	}
	for _, pin := range pins[:3] {
		wg.Go(func() { p.Unpin(pin) })
	}
	wg.Wait()
	must(t, p.Close())
	if p.PinnedBytes() != 0 {
		t.Fatalf("PinnedBytes after Close = %d", p.PinnedBytes())
	}
	if _, err := p.Pin(context.Background(), dirs[0]); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pin after Close: %v", err)
	}
}

func TestPinBudgetZeroAndCancel(t *testing.T) {
	dir := diskDir(t)
	writeFile(t, filepath.Join(dir, "f"), 1*MiB, 40)
	p := New(0, testr.New(t))
	pin, err := p.Pin(context.Background(), dir)
	if err != nil || pin.Bytes != 0 || pin.Skipped != 1*MiB {
		t.Fatalf("budget 0: %+v, %v", pin, err)
	}
	p = New(8*MiB, testr.New(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if pin, err := p.Pin(ctx, dir); !errors.Is(err, context.Canceled) || pin.Bytes != 0 || p.PinnedBytes() != 0 {
		t.Fatalf("cancelled: %+v, %v", pin, err)
	}
}

// TestPinWithoutCapability drops CAP_IPC_LOCK from the effective set of one OS thread (the
// capability sets are per thread on Linux) and pins from that thread, with RLIMIT_MEMLOCK below
// the file's size: the kernel refuses, and Pin must say why. The thread is never unlocked, so
// it exits with its goroutine and no other test runs without the capability.
func TestPinWithoutCapability(t *testing.T) {
	dir := diskDir(t)
	writeFile(t, filepath.Join(dir, "f"), 16*MiB, 50)

	var rl unix.Rlimit
	must(t, unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl))
	if rl.Cur == unix.RLIM_INFINITY || rl.Cur > 4*MiB {
		low := rl
		low.Cur = 4 * MiB
		must(t, unix.Setrlimit(unix.RLIMIT_MEMLOCK, &low))
		defer unix.Setrlimit(unix.RLIMIT_MEMLOCK, &rl)
	}

	p := New(64*MiB, testr.New(t))
	defer p.Close()
	type result struct {
		pin Pinned
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			ch <- result{err: err}
			return
		}
		data[unix.CAP_IPC_LOCK/32].Effective &^= 1 << (unix.CAP_IPC_LOCK % 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			ch <- result{err: err}
			return
		}
		pin, err := p.Pin(context.Background(), dir)
		ch <- result{pin, err}
	}()
	r := <-ch
	t.Logf("Pin without CAP_IPC_LOCK: %v", r.err)
	if !errors.Is(r.err, ErrNoLockCapability) {
		t.Fatalf("want ErrNoLockCapability, got %v (%+v)", r.err, r.pin)
	}
	if r.pin.Bytes != 0 || p.PinnedBytes() != 0 {
		t.Fatalf("nothing should be pinned: %+v, PinnedBytes %d", r.pin, p.PinnedBytes())
	}
}

// TestPinInjectedLockErrors covers the error paths with a fake mlock: missing capability
// stops Pin; any other mlock error skips the file and goes on.
func TestPinInjectedLockErrors(t *testing.T) {
	needLock(t, 2*MiB)
	dir := diskDir(t)
	writeFile(t, filepath.Join(dir, "a"), 1*MiB, 60)
	writeFile(t, filepath.Join(dir, "b"), 1*MiB, 61)

	origCap := hasCapIPCLock
	defer func() { hasCapIPCLock = origCap }()
	hasCapIPCLock = func() bool { return false }
	p := New(8*MiB, testr.New(t))
	p.mlock = func([]byte) error { return unix.EPERM }
	pin, err := p.Pin(context.Background(), dir)
	if !errors.Is(err, ErrNoLockCapability) || pin.Bytes != 0 || p.PinnedBytes() != 0 {
		t.Fatalf("EPERM without capability: %+v, %v", pin, err)
	}
	t.Logf("message: %v", err)

	hasCapIPCLock = func() bool { return true }
	calls := 0
	p.mlock = func(b []byte) error {
		calls++
		if calls == 1 {
			return unix.EAGAIN
		}
		return unix.Mlock(b)
	}
	pin, err = p.Pin(context.Background(), dir)
	if err == nil || errors.Is(err, ErrNoLockCapability) || !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("EAGAIN: want a plain error, got %v", err)
	}
	if pin.Bytes != 1*MiB || len(pin.Files) != 1 || pin.Files[0].Path != filepath.Join(dir, "b") || p.PinnedBytes() != 1*MiB {
		t.Fatalf("after EAGAIN on a: %+v, PinnedBytes %d", pin, p.PinnedBytes())
	}
	p.Unpin(pin)
	if p.PinnedBytes() != 0 || p.reserved != 0 {
		t.Fatalf("budget not returned: pinned %d reserved %d", p.PinnedBytes(), p.reserved)
	}
}

func TestHoldFor(t *testing.T) {
	needLock(t, 1*MiB)
	dir := diskDir(t)
	writeFile(t, filepath.Join(dir, "f"), 1*MiB, 70)
	p := New(8*MiB, testr.New(t))
	defer p.Close()
	ctx := context.Background()

	pin, err := p.Pin(ctx, dir)
	must(t, err)
	start := time.Now()
	must(t, p.HoldFor(ctx, pin, 100*time.Millisecond))
	if el := time.Since(start); el < 100*time.Millisecond || p.PinnedBytes() != 0 {
		t.Fatalf("HoldFor returned after %v with %d pinned", el, p.PinnedBytes())
	}

	pin, err = p.Pin(ctx, dir)
	must(t, err)
	go func() { time.Sleep(50 * time.Millisecond); p.Unpin(pin) }()
	start = time.Now()
	must(t, p.HoldFor(ctx, pin, time.Hour))
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("HoldFor did not return on Unpin (%v)", el)
	}

	pin, err = p.Pin(ctx, dir)
	must(t, err)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := p.HoldFor(cctx, pin, time.Hour); !errors.Is(err, context.DeadlineExceeded) || p.PinnedBytes() != 0 {
		t.Fatalf("HoldFor on cancelled ctx: %v, %d pinned", err, p.PinnedBytes())
	}
}

func TestPrewarm(t *testing.T) {
	dir := diskDir(t)
	path := filepath.Join(dir, "new", "data")
	writeFile(t, path, 48*MiB, 80)
	writeFile(t, filepath.Join(dir, "new", "small"), 4096+17, 81)
	if r, n := resident(t, path); pct(r, n) > 10 {
		t.Fatalf("should start cold: %.0f%%", pct(r, n))
	}

	// For information: how far WILLNEED alone gets, with one call and with 4 MiB chunks.
	f, err := os.Open(path)
	must(t, err)
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED))
	time.Sleep(200 * time.Millisecond)
	r, n := resident(t, path)
	t.Logf("one whole-file WILLNEED: %.1f%% resident", pct(r, n))
	must(t, Drop(path))
	for off := int64(0); off < 48*MiB; off += 4 * MiB {
		must(t, unix.Fadvise(int(f.Fd()), off, 4*MiB, unix.FADV_WILLNEED))
	}
	time.Sleep(200 * time.Millisecond)
	r, n = resident(t, path)
	t.Logf("WILLNEED in 4 MiB chunks: %.1f%% resident", pct(r, n))
	f.Close()
	must(t, Drop(path))
	must(t, Drop(filepath.Join(dir, "new", "small")))

	start := time.Now()
	warmed, err := Prewarm(context.Background(), filepath.Join(dir, "new"), 0)
	must(t, err)
	t.Logf("Prewarm of 48 MiB: %v", time.Since(start))
	if warmed != 48*MiB+4096+17 {
		t.Fatalf("warmed %d", warmed)
	}
	for _, p := range []string{path, filepath.Join(dir, "new", "small")} {
		if r, n := resident(t, p); pct(r, n) < 95 {
			t.Fatalf("%s after Prewarm: %.1f%% resident", p, pct(r, n))
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Prewarm(ctx, dir, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Prewarm with cancelled ctx: %v", err)
	}
}

// writeDropBehind writes size pseudo-random bytes to path through a DropBehindWriter and
// returns their SHA-256.
func writeDropBehind(t *testing.T, path string, size int64, seed uint64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	w, err := NewDropBehindWriter(f, 4*MiB)
	must(t, err)
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(w, h), io.LimitReader(newRandReader(seed), size))
	must(t, err)
	r, n := resident(t, path)
	t.Logf("before Flush: %.1f%% of %d MiB resident", pct(r, n), n/MiB)
	if r > 3*4*MiB {
		t.Errorf("before Flush, %d MiB resident: more than the last windows", r/MiB)
	}
	must(t, w.Flush())
	if w.Written() != size {
		t.Fatalf("Written = %d", w.Written())
	}
	return [32]byte(h.Sum(nil))
}

func TestDropBehindWriter(t *testing.T) {
	dir := diskDir(t)
	path := filepath.Join(dir, "download")
	start := time.Now()
	sum := writeDropBehind(t, path, 64*MiB, 90)
	t.Logf("64 MiB written drop-behind in %v", time.Since(start))
	if r, n := resident(t, path); n != 64*MiB || pct(r, n) > 10 {
		t.Fatalf("after drop-behind write: %d/%d resident (%.1f%%)", r, n, pct(r, n))
	}
	// The data is intact.
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	if [32]byte(h.Sum(nil)) != sum {
		t.Fatal("content differs")
	}
}

// TestLiveStaysHotDuringDownload is the rollout scenario in small: the live version (16 MiB)
// is pinned while a 64 MiB download is written drop-behind; the live data stays 100% resident
// and the download leaves the cache.
func TestLiveStaysHotDuringDownload(t *testing.T) {
	needLock(t, 16*MiB)
	dir := diskDir(t)
	live := filepath.Join(dir, "svc", "1.0")
	writeFile(t, filepath.Join(live, "bin"), 2*MiB, 100)
	writeFile(t, filepath.Join(live, "data"), 14*MiB, 101)

	p := New(32*MiB, testr.New(t))
	defer p.Close()
	pin, err := p.Pin(context.Background(), live)
	must(t, err)
	if pin.Bytes != 16*MiB {
		t.Fatalf("pinned %+v", pin)
	}
	must(t, os.MkdirAll(filepath.Join(dir, "svc", "2.0"), 0o755))
	download := filepath.Join(dir, "svc", "2.0", "artifact")
	writeDropBehind(t, download, 64*MiB, 102)
	// Another process' DONTNEED (or reclaim) does not touch the pinned pages either.
	must(t, Drop(filepath.Join(live, "data")))

	for _, f := range []string{"bin", "data"} {
		if r, n := resident(t, filepath.Join(live, f)); r != n {
			t.Fatalf("live %s: %d/%d resident during the download", f, r, n)
		}
	}
	if r, n := resident(t, download); pct(r, n) > 10 {
		t.Fatalf("download %.1f%% resident", pct(r, n))
	}
	t.Logf("PinnedBytes = %d", p.PinnedBytes())
	p.Unpin(pin)
}

func TestResident(t *testing.T) {
	dir := diskDir(t)
	path := filepath.Join(dir, "f")
	writeFile(t, path, 3*pageSize+100, 110)
	r, n := resident(t, path)
	if n != 3*pageSize+100 || r > pageSize {
		t.Fatalf("cold: %d/%d", r, n)
	}
	b, err := os.ReadFile(path)
	must(t, err)
	if r, n = resident(t, path); r != n || int64(len(b)) != n {
		t.Fatalf("after reading: %d/%d", r, n)
	}
	writeFile(t, filepath.Join(dir, "empty"), 0, 0)
	if r, n = resident(t, filepath.Join(dir, "empty")); r != 0 || n != 0 {
		t.Fatalf("empty: %d/%d", r, n)
	}
	if _, _, err := Resident(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
