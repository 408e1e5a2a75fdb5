// Command bench-pagecache shows what pre-warming and pinning (package nodeagent/pagecache) buy a
// freshly switched service: it creates a data file of -size bytes and measures the time to read
// it, sequentially and with random 4 KiB reads, right after the page cache was dropped (cold:
// `echo 3 > /proc/sys/vm/drop_caches`, as root) and after Prewarm + Pin (warm). It prints the
// figures and the speed-up; it never passes or fails on timing.
//
//	go run ./cmd/bench-pagecache -size 256MiB -runs 3
//
// Dropping the caches with /proc/sys/vm/drop_caches affects the whole machine (needs root);
// when that is not possible it falls back to fadvise DONTNEED on the data file and says so.
// The data file goes in -dir (default: the first of $TMPDIR, /var/tmp and ./bin that is on a
// disk, not tmpfs: on tmpfs there is no cold) and is removed at the end unless -keep.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/rollkeeper/rollkeeper/nodeagent/pagecache"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-pagecache:", err)
		os.Exit(1)
	}
}

type sizeFlag int64

func (s *sizeFlag) String() string { return fmtBytes(int64(*s)) }
func (s *sizeFlag) Set(v string) error {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("bad size %q", v)
	}
	*s = sizeFlag(n * mult)
	return nil
}

func run() error {
	size := sizeFlag(256 << 20)
	flag.Var(&size, "size", "data file size (bytes, or with KiB/MiB/GiB)")
	dir := flag.String("dir", "", "directory for the data file (default: a disk-backed temporary directory)")
	randomReads := flag.Int("random", 2000, "random 4 KiB reads per measurement")
	runs := flag.Int("runs", 3, "measurements of each kind (the median is reported)")
	chunk := flag.Int64("chunk", pagecache.DefaultPrewarmChunk, "Prewarm's WILLNEED chunk in bytes")
	keep := flag.Bool("keep", false, "keep the data file")
	flag.Parse()

	base, err := pickDir(*dir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(base, "bench-pagecache-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(work)
	}
	data := filepath.Join(work, "data")

	fmt.Printf("data file: %s, %s\n", data, fmtBytes(int64(size)))
	start := time.Now()
	if err := createFile(data, int64(size)); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("written (drop-behind) in %v: %s/s\n", el.Round(time.Millisecond), fmtBytes(int64(float64(size)/el.Seconds())))

	dropper := newDropper(data)
	p := pagecache.New(int64(size)+(1<<20), logr.Discard())
	defer p.Close()

	var coldSeq, coldRand, warmSeq, warmRand, prewarmT, pinT, coldPinT []time.Duration
	pinned := true
	for i := range *runs {
		// Cold.
		if err := dropper.drop(); err != nil {
			return err
		}
		if err := checkResident(data, "cold", 1); err != nil {
			return err
		}
		d, err := readSeq(data)
		if err != nil {
			return err
		}
		coldSeq = append(coldSeq, d)
		if err := dropper.drop(); err != nil {
			return err
		}
		d, err = readRandom(data, *randomReads, uint64(i))
		if err != nil {
			return err
		}
		coldRand = append(coldRand, d)

		// Warm: what the agent does once the new version is staged.
		if err := dropper.drop(); err != nil {
			return err
		}
		start := time.Now()
		if _, err := pagecache.Prewarm(context.Background(), work, *chunk); err != nil {
			return err
		}
		prewarmT = append(prewarmT, time.Since(start))
		start = time.Now()
		pin, err := p.Pin(context.Background(), work)
		pinT = append(pinT, time.Since(start))
		if err != nil {
			if !errors.Is(err, pagecache.ErrNoLockCapability) {
				return err
			}
			if pinned {
				fmt.Printf("note: %v — warm figures are Prewarm only\n", err)
			}
			pinned = false
		}
		if err := checkResident(data, "warm", 99); err != nil {
			return err
		}
		if d, err = readSeq(data); err != nil {
			return err
		}
		warmSeq = append(warmSeq, d)
		if d, err = readRandom(data, *randomReads, uint64(i)); err != nil {
			return err
		}
		warmRand = append(warmRand, d)
		p.Unpin(pin)

		// For comparison: Pin alone from cold (it reads ahead chunk by chunk while locking).
		if pinned {
			if err := dropper.drop(); err != nil {
				return err
			}
			start = time.Now()
			pin, err = p.Pin(context.Background(), work)
			coldPinT = append(coldPinT, time.Since(start))
			if err != nil {
				return err
			}
			p.Unpin(pin)
		}
	}

	fmt.Printf("cache dropped with: %s\n", dropper.method())
	fmt.Printf("median of %d runs\n\n", *runs)
	fmt.Printf("%-28s %-26s %-26s %s\n", "", "cold", "warm (Prewarm+Pin)", "speed-up")
	row := func(name string, cold, warm time.Duration, unit func(time.Duration) string) {
		fmt.Printf("%-28s %-26s %-26s %.1fx\n", name, unit(cold), unit(warm), cold.Seconds()/warm.Seconds())
	}
	seqUnit := func(d time.Duration) string {
		return fmt.Sprintf("%v (%s/s)", d.Round(time.Microsecond), fmtBytes(int64(float64(size)/d.Seconds())))
	}
	randUnit := func(d time.Duration) string {
		return fmt.Sprintf("%v (%v/read)", d.Round(time.Microsecond), (d / time.Duration(*randomReads)).Round(10*time.Nanosecond))
	}
	row("sequential read, whole file", median(coldSeq), median(warmSeq), seqUnit)
	row(fmt.Sprintf("%d random 4 KiB reads", *randomReads), median(coldRand), median(warmRand), randUnit)
	fmt.Printf("\nPrewarm (WILLNEED %s chunks + read the rest): %v (%s/s)\n", fmtBytes(*chunk), median(prewarmT).Round(time.Millisecond), fmtBytes(int64(float64(size)/median(prewarmT).Seconds())))
	fmt.Printf("Pin after Prewarm (mmap + mlock): %v\n", median(pinT).Round(time.Microsecond))
	if len(coldPinT) > 0 {
		fmt.Printf("Pin alone, from cold (mmap + WILLNEED + mlock): %v (%s/s)\n", median(coldPinT).Round(time.Millisecond), fmtBytes(int64(float64(size)/median(coldPinT).Seconds())))
	}
	fmt.Printf("all runs: cold sequential %v; warm sequential %v; cold random %v; warm random %v\n", rounded(coldSeq), rounded(warmSeq), rounded(coldRand), rounded(warmRand))
	fmt.Printf("(the warm-up runs before the switch, while the old version still serves; the service then reads warm)\n")
	return nil
}

func pickDir(dir string) (string, error) {
	if dir != "" {
		if mem, err := pagecache.InMemoryFS(dir); err != nil {
			return "", err
		} else if mem {
			fmt.Printf("warning: %s is on tmpfs/ramfs: there is no cold read there\n", dir)
		}
		return dir, nil
	}
	for _, d := range []string{os.TempDir(), "/var/tmp", "bin"} {
		if mem, err := pagecache.InMemoryFS(d); err == nil && !mem {
			return d, nil
		}
	}
	return "", errors.New("no disk-backed directory found; pass -dir")
}

func createFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := pagecache.DropBehind(f)
	if err != nil {
		return err
	}
	var seed [32]byte
	seed[0] = 42
	if _, err := io.Copy(w, io.LimitReader(rand.NewChaCha8(seed), size)); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

type dropper struct {
	path     string
	fallback error // why /proc/sys/vm/drop_caches could not be used
}

func newDropper(path string) *dropper { return &dropper{path: path} }

func (d *dropper) drop() error {
	unix.Sync()
	if d.fallback == nil {
		err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
		if err == nil {
			return nil
		}
		d.fallback = err
		fmt.Printf("note: cannot write /proc/sys/vm/drop_caches (%v): falling back to fadvise DONTNEED on the data file\n", err)
	}
	return pagecache.Drop(d.path)
}

func (d *dropper) method() string {
	if d.fallback == nil {
		return "echo 3 > /proc/sys/vm/drop_caches"
	}
	return "fadvise DONTNEED on the data file (drop_caches: " + d.fallback.Error() + ")"
}

func checkResident(path, what string, wantPct float64) error {
	r, n, err := pagecache.Resident(path)
	if err != nil {
		return err
	}
	p := 100 * float64(r) / float64(n)
	if (what == "cold" && p > wantPct) || (what == "warm" && p < wantPct) {
		fmt.Printf("note: %s file is %.1f%% resident\n", what, p)
	}
	return nil
}

func readSeq(path string) (time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			return time.Since(start), nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func readRandom(path string, n int, seed uint64) (time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	pages := st.Size() / 4096
	rng := rand.New(rand.NewPCG(seed, 7))
	buf := make([]byte, 4096)
	start := time.Now()
	for range n {
		if _, err := f.ReadAt(buf, rng.Int64N(pages)*4096); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Microsecond)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
