// Command bench-distribution measures how long it takes to get one artifact to N nodes, peer to
// peer (BitTorrent, ZooKeeper as tracker, the origin seeding once plus web seed) versus plain
// HTTP from the origin, under per-link rate limits that model a network (every peer's upload
// and download and the origin's upload limited to R bytes/s). It prints figures; it never
// passes or fails on them. Each node is a separate process, so its peak RSS is its own.
//
// Every figure is the median of -runs runs, printed with the min and max; -v prints each run's
// per-node timeline (first peer, first data, completion) and where each node's bytes came from
// (the seeder, other peers, the web seed).
//
//	bench-distribution [-n 8] [-size 32MiB] [-rate 4MiB] [-mode both|p2p|http] [-runs 5] [-v]
//	                   [-late] [-slow 1 [-slow-rate 1MiB]]
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"golang.org/x/time/rate"

	"github.com/rollkeeper/rollkeeper/internal/p2p"
	"github.com/rollkeeper/rollkeeper/internal/tracker"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/fetch"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "node" {
		if err := node(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "node:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.n, "n", 8, "number of nodes")
	size := flag.String("size", "32MiB", "artifact size")
	rateS := flag.String("rate", "4MiB", "bytes/s of every link: each node's upload and download, the origin's upload")
	flag.StringVar(&o.mode, "mode", "both", "both, p2p or http")
	flag.IntVar(&o.runs, "runs", 5, "runs per mode; figures are the median, with min and max")
	flag.BoolVar(&o.verbose, "v", false, "print every run's per-node timeline (first peer, first data, completion) and where its bytes came from")
	flag.BoolVar(&o.late, "late", false, "p2p: after the others finished, one more node joins; its bytes from the origin are reported")
	flag.IntVar(&o.slow, "slow", 0, "p2p: this many nodes have slow links (-slow-rate); the others' completion is reported apart")
	slowRate := flag.String("slow-rate", "", "bytes/s of the slow nodes' links (default a quarter of -rate)")
	flag.BoolVar(&o.originSeeding, "origin-seeding", true, "p2p: the seeder uploads a piece to one downloader at a time (p2p.Config.OriginSeeding)")
	flag.StringVar(&o.dir, "dir", "", "work directory on a real disk (default: a new one under /var/tmp)")
	flag.Parse()
	o.size, o.rate = parseBytes(*size), parseBytes(*rateS)
	o.slowRate = o.rate / 4
	if *slowRate != "" {
		o.slowRate = parseBytes(*slowRate)
	}
	if o.n < 1 || o.runs < 1 || o.slow < 0 || o.slow >= o.n || o.size <= 0 || o.rate <= 0 || o.slowRate <= 0 {
		fmt.Fprintln(os.Stderr, "bench-distribution: want n ≥ 1, runs ≥ 1, 0 ≤ slow < n, positive sizes and rates")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-distribution:", err)
		os.Exit(1)
	}
}

type options struct {
	n, runs, slow        int
	size, rate, slowRate int64
	mode, dir            string
	verbose, late        bool
	originSeeding        bool
}

// nodeReport is what a node process prints when it has the artifact (one JSON line after
// "done "). Times are seconds since the run started: Joined is when the node had the torrent
// (published, read, added to its client), Verified when its last piece passed its hash and
// Complete when the fetch returned (the file synced, its digest checked, installed).
type nodeReport struct {
	Joined, FirstPeer, FirstData, Verified, Complete float64
	// FromSeeder, FromPeers and FromWebSeed are the useful bytes received from each kind of
	// source; Wasted the bytes received that were not needed (duplicates).
	FromSeeder, FromPeers, FromWebSeed, Wasted int64
	// Rates are the useful bytes received in each second of the run, in MiB/s.
	Rates []float64
}

type nodeResult struct {
	name    string
	slow    bool
	report  nodeReport
	peakRSS int64
	cpu     time.Duration // user + system
}

type runResult struct {
	// wall and fastWall: until every node (the nodes without slow links) had the artifact
	// installed; transfer and fastTransfer: until they had every piece (the end of the
	// distribution, which the bound is about; the install after it is local work).
	wall, fastWall         time.Duration
	transfer, fastTransfer time.Duration
	originBytes            int64 // web seed (HTTP) + the seeder's upload
	webSeedBytes           int64
	seederBytes            int64
	nodes                  []nodeResult
	late                   *nodeResult
	lateOrigin             int64
}

func run(o options) error {
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("/var/tmp", "bench-distribution-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	ctx := context.Background()
	file := filepath.Join(dir, "artifact.bin")
	sum, err := makeArtifact(file, o.size)
	if err != nil {
		return err
	}
	origin, err := newOrigin(file, o.rate)
	if err != nil {
		return err
	}
	defer origin.close()
	F, R, N := float64(o.size), float64(o.rate), float64(o.n)
	bound := max(F/R, N*F/(R+N*R))
	fmt.Printf("artifact %s, %d nodes, every link %s/s", human(o.size), o.n, human(o.rate))
	if o.slow > 0 {
		fmt.Printf(" (%d of them %s/s)", o.slow, human(o.slowRate))
	}
	fmt.Printf(", lower bound max(F/R, N·F/(R+N·R)) = %.2fs; %d runs per mode, %d CPU cores\n", bound, o.runs, runtime.NumCPU())
	fmt.Printf("figures: median [min–max]; transfer: until every node had every piece (verified), installed: until every node's fetch\n")
	fmt.Printf("returned (file synced, its sha256 checked, installed: local work, here %d nodes on %d cores and one disk)\n\n", o.n, runtime.NumCPU())

	type modeRuns struct {
		name string
		runs []runResult
	}
	var all []modeRuns
	if o.mode == "both" || o.mode == "http" {
		m := modeRuns{name: "http"}
		for i := range o.runs {
			res, err := benchHTTP(dir, i, o, origin, sum)
			if err != nil {
				return fmt.Errorf("http run %d: %w", i+1, err)
			}
			fmt.Fprintf(os.Stderr, "http run %d: transfer %.2fs, installed %.2fs\n", i+1, res.transfer.Seconds(), res.wall.Seconds())
			m.runs = append(m.runs, res)
		}
		all = append(all, m)
	}
	if o.mode == "both" || o.mode == "p2p" {
		zk, err := zkserver.Start(ctx, filepath.Join(dir, "zk"), 1)
		if err != nil {
			return err
		}
		defer zk.Stop()
		m := modeRuns{name: "p2p"}
		for i := range o.runs {
			res, err := benchP2P(ctx, dir, i, o, zk.Connect(), origin, file, sum)
			if err != nil {
				return fmt.Errorf("p2p run %d: %w", i+1, err)
			}
			if o.verbose {
				printTimeline(i, res)
			} else {
				fmt.Fprintf(os.Stderr, "p2p run %d: transfer %.2fs, installed %.2fs\n", i+1, res.transfer.Seconds(), res.wall.Seconds())
			}
			m.runs = append(m.runs, res)
		}
		all = append(all, m)
	}

	fmt.Printf("%-5s %-22s %-18s %-22s %-18s %-24s %-26s %-22s %s\n", "mode", "transfer (s)", "efficiency (%)", "installed (s)", "efficiency (%)",
		"origin bytes (× artifact)", "wasted bytes (× artifact)", "peak RSS per node (MiB)", "CPU (% of the cores)")
	for _, m := range all {
		transfer := figures(m.runs, func(r runResult) float64 { return r.fastTransfer.Seconds() })
		eff := figures(m.runs, func(r runResult) float64 { return 100 * bound / r.fastTransfer.Seconds() })
		times := figures(m.runs, func(r runResult) float64 { return r.fastWall.Seconds() })
		effInstalled := figures(m.runs, func(r runResult) float64 { return 100 * bound / r.fastWall.Seconds() })
		orig := figures(m.runs, func(r runResult) float64 { return float64(r.originBytes) / F })
		wasted := figures(m.runs, func(r runResult) float64 {
			var w int64
			for _, nr := range r.nodes {
				w += nr.report.Wasted
			}
			return float64(w) / F
		})
		rss := figures(m.runs, func(r runResult) float64 {
			var mx int64
			for _, nr := range r.nodes {
				mx = max(mx, nr.peakRSS)
			}
			return float64(mx) / (1 << 20)
		})
		cpu := figures(m.runs, func(r runResult) float64 {
			var c time.Duration
			for _, nr := range r.nodes {
				c += nr.cpu
			}
			return 100 * c.Seconds() / (r.wall.Seconds() * float64(runtime.NumCPU()))
		})
		fmt.Printf("%-5s %-22s %-18s %-22s %-18s %-24s %-26s %-22s %s\n", m.name, transfer.f(2), eff.f(0), times.f(2), effInstalled.f(0),
			orig.f(2), wasted.f(2), rss.f(0), cpu.f(0))
	}
	for _, m := range all {
		if m.name != "p2p" {
			continue
		}
		if o.slow > 0 {
			slowT := figures(m.runs, func(r runResult) float64 { return r.wall.Seconds() })
			fmt.Printf("\nslow nodes (%s/s) done in %s s; the others' time above (bound for them %.2fs)\n", human(o.slowRate), slowT.f(2), bound)
		}
		if o.late {
			lt := figures(m.runs, func(r runResult) float64 { return r.late.report.Complete })
			lo := figures(m.runs, func(r runResult) float64 { return float64(r.lateOrigin) })
			fmt.Printf("\nlate joiner (starts after the others finished): done in %s s (F/R = %.2fs), bytes from the origin %s\n", lt.f(2), F/R, lo.f(0))
		}
	}
	if len(all) == 2 {
		h := figures(all[0].runs, func(r runResult) float64 { return r.wall.Seconds() })
		p := figures(all[1].runs, func(r runResult) float64 { return r.wall.Seconds() })
		fmt.Printf("\nspeed-up of p2p over http (medians): %.1fx (http expected near N·F/R = %.1fs)\n", h.median/p.median, N*F/R)
	}
	return nil
}

// stat is one figure over the runs.
type stat struct{ median, lo, hi float64 }

func figures(runs []runResult, f func(runResult) float64) stat {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{med, v[0], v[len(v)-1]}
}

func (s stat) f(prec int) string {
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, s.median, prec, s.lo, prec, s.hi)
}

func printTimeline(i int, r runResult) {
	fmt.Printf("run %d: transfer %.2fs, installed %.2fs, origin sent %s (web seed %s, seeder %s)\n", i+1, r.transfer.Seconds(), r.wall.Seconds(), human(r.originBytes), human(r.webSeedBytes), human(r.seederBytes))
	fmt.Printf("  %-8s %7s %10s %10s %9s %9s %12s %12s %13s %10s %9s %6s   %s\n", "node", "joined", "first peer", "first data", "verified", "complete", "from seeder",
		"from peers", "from web seed", "wasted", "peak RSS", "CPU", "useful MiB/s in each second")
	rows := append([]nodeResult(nil), r.nodes...)
	if r.late != nil {
		rows = append(rows, *r.late)
	}
	for _, nr := range rows {
		name := nr.name
		if nr.slow {
			name += " (slow)"
		}
		rep := nr.report
		fmt.Printf("  %-8s %6.2fs %9.2fs %9.2fs %8.2fs %8.2fs %12s %12s %13s %10s %9s %5.1fs  ", name, rep.Joined, rep.FirstPeer, rep.FirstData, rep.Verified, rep.Complete,
			human(rep.FromSeeder), human(rep.FromPeers), human(rep.FromWebSeed), human(rep.Wasted), human(nr.peakRSS), nr.cpu.Seconds())
		for _, r := range rep.Rates {
			fmt.Printf(" %.1f", r)
		}
		fmt.Println()
	}
	fmt.Println()
}

// origin serves the artifact over HTTP with its upload limited to r bytes/s in total.
type origin struct {
	srv    *http.Server
	url    string
	served atomic.Int64
}

func newOrigin(file string, r int64) (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &origin{url: "http://" + ln.Addr().String() + "/artifact.bin"}
	lim := rate.NewLimiter(rate.Limit(r), 64<<10)
	o.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		f, err := os.Open(file)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		http.ServeContent(&limitedWriter{ResponseWriter: w, lim: lim, ctx: req.Context(), count: &o.served}, req, "artifact.bin", time.Time{}, f)
	})}
	go func() { _ = o.srv.Serve(ln) }()
	return o, nil
}

func (o *origin) close() { _ = o.srv.Close() }

type limitedWriter struct {
	http.ResponseWriter
	lim   *rate.Limiter
	ctx   context.Context
	count *atomic.Int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 64<<10)]
		if err := l.lim.WaitN(l.ctx, len(chunk)); err != nil {
			return written, err
		}
		n, err := l.ResponseWriter.Write(chunk)
		written += n
		l.count.Add(int64(n))
		if err != nil {
			return written, err
		}
		p = p[len(chunk):]
	}
	return written, nil
}

func benchHTTP(dir string, runIdx int, o options, orig *origin, sum string) (runResult, error) {
	before := orig.served.Load()
	var res runResult
	runDir := filepath.Join(dir, fmt.Sprintf("http-%d", runIdx))
	defer os.RemoveAll(runDir) // N copies of the artifact
	nodes, err := startNodes(o.n, func(i int) ([]string, bool) {
		return []string{"-mode=http", "-url=" + orig.url, "-sha=" + sum, "-dir=" + filepath.Join(runDir, strconv.Itoa(i))}, false
	})
	if err != nil {
		return res, err
	}
	start := time.Now()
	nodes.start(start)
	err = nodes.wait()
	res.wall = time.Since(start)
	res.fastWall = res.wall
	res.transfer, res.fastTransfer = nodes.transfer()
	res.nodes = nodes.stop()
	res.originBytes = orig.served.Load() - before
	return res, err
}

func benchP2P(ctx context.Context, dir string, runIdx int, o options, zkConnect string, orig *origin, file, sum string) (runResult, error) {
	var res runResult
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(zkConnect), Logger: logr.Discard()})
	if err != nil {
		return res, err
	}
	defer c.Close()
	root := fmt.Sprintf("/bench-%d", runIdx)
	tr := tracker.Tracker{ZK: c, Layout: zklayout.MustNew(root)}
	for _, p := range tr.Layout.Bases() {
		if err := c.EnsurePath(ctx, p); err != nil {
			return res, err
		}
	}
	runDir := filepath.Join(dir, fmt.Sprintf("p2p-%d", runIdx))
	defer os.RemoveAll(runDir) // 2N copies of the artifact (downloaded, installed)
	seedCl, err := p2p.New(p2p.Config{DataDir: filepath.Join(runDir, "seeder"), ListenHost: "127.0.0.1", UploadRate: o.rate,
		OriginSeeding: o.originSeeding, Logger: logr.Discard()})
	if err != nil {
		return res, err
	}
	defer seedCl.Close()
	mi, err := p2p.BuildMetaInfo(ctx, file, "artifact.bin", []string{orig.url})
	if err != nil {
		return res, err
	}
	t, err := seedCl.Seed(ctx, mi, file)
	if err != nil {
		return res, err
	}
	args := func(i int) ([]string, bool) {
		r, slow := o.rate, i < o.slow
		if slow {
			r = o.slowRate
		}
		return []string{"-mode=p2p", "-url=" + orig.url, "-sha=" + sum, "-dir=" + filepath.Join(runDir, strconv.Itoa(i)),
			"-zk=" + zkConnect, "-root=" + root, "-host=" + fmt.Sprintf("127.0.0.%d", i+2), "-rate=" + strconv.FormatInt(r, 10),
			"-name=node-" + strconv.Itoa(i)}, slow
	}
	served := func() (web, seeder int64) { return orig.served.Load(), t.Stats().BytesWrittenData }
	web0, seed0 := served()
	// The nodes start and connect first, as running agents wait for a rollout; the run starts
	// when the seeder registers and the torrent is published (what the operator does), and the
	// nodes learn of it from their ZooKeeper watch.
	nodes, err := startNodes(o.n, args)
	if err != nil {
		return res, err
	}
	start := time.Now()
	nodes.start(start)
	if _, err := tr.Register(ctx, mi.InfoHash, zklayout.Peer{Node: "origin", Host: "127.0.0.1", Port: seedCl.ListenPort(), Complete: true, Origin: true}); err != nil {
		nodes.stop()
		return res, err
	}
	if err := tr.Publish(ctx, zklayout.Torrent{Service: "bench", Version: "v1", InfoHash: mi.InfoHash, Size: mi.Size, PieceLength: mi.PieceLength}, mi.Bytes); err != nil {
		nodes.stop()
		return res, err
	}
	if os.Getenv("BENCH_DIST_DEBUG") != "" {
		// The seeder's side of a stall, once the nodes have logged theirs.
		dump := time.AfterFunc(5*time.Second+time.Duration(2*float64(o.size)/float64(o.rate)*float64(time.Second)), func() {
			fmt.Fprintln(os.Stderr, "seeder status:")
			seedCl.WriteStatus(os.Stderr)
		})
		defer dump.Stop()
	}
	err = nodes.wait()
	res.wall = time.Since(start)
	for _, nr := range nodes.results {
		if !nr.slow {
			res.fastWall = max(res.fastWall, time.Duration(nr.report.Complete*float64(time.Second)))
		}
	}
	res.transfer, res.fastTransfer = nodes.transfer()
	web1, seed1 := served()
	res.webSeedBytes, res.seederBytes = web1-web0, seed1-seed0
	res.originBytes = res.webSeedBytes + res.seederBytes
	if err == nil && o.late {
		// The others keep seeding; one more node joins the finished swarm.
		late, lerr := startNodes(1, func(int) ([]string, bool) {
			a, _ := args(o.n)
			return a, false
		})
		if lerr != nil {
			err = lerr
		} else {
			late.start(time.Now())
			err = late.wait()
			web2, seed2 := served()
			res.lateOrigin = web2 - web1 + seed2 - seed1
			lr := late.stop()[0]
			lr.name += " (late)"
			res.late = &lr
		}
	}
	res.nodes = nodes.stop()
	return res, err
}

// nodeSet is a set of running node processes.
type nodeSet struct {
	cmds    []*exec.Cmd
	stdins  []io.WriteCloser
	outs    []*bufio.Reader
	done    chan error
	results []nodeResult
}

// startNodes starts n node processes and returns once each is ready (connected to ZooKeeper,
// its torrent client listening); start tells them to go.
func startNodes(n int, args func(i int) ([]string, bool)) (*nodeSet, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	s := &nodeSet{done: make(chan error, n), results: make([]nodeResult, n)}
	for i := range n {
		a, slow := args(i)
		cmd := exec.Command(self, append([]string{"node"}, a...)...)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			s.stop()
			return nil, err
		}
		s.cmds, s.stdins = append(s.cmds, cmd), append(s.stdins, in)
		s.outs = append(s.outs, bufio.NewReader(io.LimitReader(out, 64<<10)))
		s.results[i] = nodeResult{name: "node-" + strconv.Itoa(i), slow: slow}
	}
	for i, out := range s.outs {
		if line, _ := out.ReadString('\n'); line != "ready\n" {
			s.stop()
			return nil, fmt.Errorf("node %d did not start", i)
		}
	}
	return s, nil
}

// transfer is when the last node, and the last node without a slow link, had every piece.
func (s *nodeSet) transfer() (all, fast time.Duration) {
	for _, nr := range s.results {
		d := time.Duration(nr.report.Verified * float64(time.Second))
		all = max(all, d)
		if !nr.slow {
			fast = max(fast, d)
		}
	}
	return all, fast
}

// start tells the nodes the run started at t0 (their reports count from it).
func (s *nodeSet) start(t0 time.Time) {
	for i := range s.cmds {
		fmt.Fprintf(s.stdins[i], "go %d\n", t0.UnixNano())
		go func() {
			line, _ := s.outs[i].ReadString('\n')
			rest, ok := strings.CutPrefix(line, "done ")
			if !ok {
				s.done <- fmt.Errorf("node %d did not finish", i)
				return
			}
			if err := json.Unmarshal([]byte(rest), &s.results[i].report); err != nil {
				s.done <- fmt.Errorf("node %d: report: %w", i, err)
				return
			}
			s.done <- nil
		}()
	}
}

// wait returns when every node has the artifact (or failed).
func (s *nodeSet) wait() error {
	var first error
	for range s.cmds {
		if err := <-s.done; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// stop ends the nodes (they seed until their stdin closes) and returns their results with peak
// RSS and CPU time.
func (s *nodeSet) stop() []nodeResult {
	for i, cmd := range s.cmds {
		s.stdins[i].Close()
		_ = cmd.Wait()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.results[i].peakRSS = ru.Maxrss * 1024
		}
		s.results[i].cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	return s.results
}

// node is one simulated node: it fetches the artifact, prints "done" and its report, and seeds
// until its stdin closes.
func node(args []string) error {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	mode := fs.String("mode", "p2p", "")
	url := fs.String("url", "", "")
	sha := fs.String("sha", "", "")
	dir := fs.String("dir", "", "")
	zkc := fs.String("zk", "", "")
	root := fs.String("root", "/bench", "")
	host := fs.String("host", "127.0.0.1", "")
	r := fs.Int64("rate", 0, "")
	name := fs.String("name", "node", "")
	_ = fs.Parse(args)
	if d := os.Getenv("BENCH_DIST_CPUPROFILE"); d != "" {
		// A CPU profile per node, for finding where a run's CPU goes: DIR/<name>.pprof.
		pf, err := os.Create(filepath.Join(d, *name+".pprof"))
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	stdin := bufio.NewReader(os.Stdin)
	// ready waits for the run to start, once the node is set up.
	var start time.Time
	ready := func() error {
		fmt.Println("ready")
		line, err := stdin.ReadString('\n')
		if err != nil {
			return err
		}
		t0, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "go ")), 10, 64)
		if err != nil {
			return fmt.Errorf("bad start line %q", line)
		}
		start = time.Unix(0, t0)
		return nil
	}
	since := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return t.Sub(start).Seconds()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rel := &zklayout.Release{Service: "bench", Version: "v1", Artifact: zklayout.Artifact{URL: *url, SHA256: *sha, Unpack: zklayout.UnpackNone}}
	dest := filepath.Join(*dir, "installed")
	report := func(rep nodeReport) error {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		fmt.Printf("done %s\n", b)
		return nil
	}
	if *mode == "http" {
		if err := ready(); err != nil {
			return err
		}
		// fetch.HTTP.Fetch, in two steps to time the transfer apart.
		h := fetch.NewHTTP()
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return err
		}
		tmp, err := os.CreateTemp(*dir, ".download-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		if err := h.Download(ctx, rel.Artifact, tmp); err != nil {
			return err
		}
		verified := since(time.Now())
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := fetch.Install(tmp, rel.Artifact, dest); err != nil {
			return err
		}
		return report(nodeReport{Verified: verified, Complete: since(time.Now())})
	}
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(*zkc), Logger: logr.Discard()})
	if err != nil {
		return err
	}
	defer c.Close()
	// BENCH_DIST_DEBUG=1: a download that stalls for 3 s logs the client's status (connections,
	// requests, choke states) to stderr, and the web seed waits a minute instead of 5 s.
	debug := os.Getenv("BENCH_DIST_DEBUG") != ""
	logger, webSeedAfter, stallReport := logr.Discard(), time.Duration(0), time.Duration(0)
	if debug {
		logger = funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, *name, prefix, args) }, funcr.Options{})
		webSeedAfter, stallReport = time.Minute, 3*time.Second
	}
	cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(*dir, "torrent"), ListenHost: *host, UploadRate: *r, DownloadRate: *r,
		WebSeedAfter: webSeedAfter, Logger: logger})
	if err != nil {
		return err
	}
	defer cl.Close()
	tr := tracker.Tracker{ZK: c, Layout: zklayout.MustNew(*root)}
	f := fetch.NewP2P(fetch.P2PConfig{Client: cl, Tracker: tr, Node: *name, Host: *host, DataDir: filepath.Join(*dir, "torrent", "data"),
		StallReport: stallReport, Logger: logger})
	defer f.Close()
	if err := ready(); err != nil {
		return err
	}
	fetched := make(chan error, 1)
	go func() { fetched <- f.Fetch(ctx, rel, dest) }()
	tor, _, err := tr.WaitPublished(ctx, "bench", "v1")
	if err != nil {
		return err
	}
	// Useful bytes per second of the run, sampled while the fetch goes on.
	var rates []float64
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var last int64
		for sec := 1; ; {
			select {
			case <-stopSampling:
				return
			case now := <-tick.C:
				if now.Sub(start) < time.Duration(sec)*time.Second {
					continue
				}
				st, _ := f.Stats(tor.InfoHash)
				rates = append(rates, float64(st.BytesReadUsefulData-last)/(1<<20))
				last = st.BytesReadUsefulData
				sec++
			}
		}
	}()
	err = <-fetched
	close(stopSampling)
	<-sampled
	if err != nil {
		return err
	}
	done := since(time.Now())
	trace, _ := f.Trace(tor.InfoHash)
	st, _ := f.Stats(tor.InfoHash)
	rep := nodeReport{Joined: since(trace.Added), FirstPeer: since(trace.FirstPeer), FirstData: since(trace.FirstData), Verified: since(trace.Verified), Complete: done,
		FromWebSeed: trace.FromWebSeeds, Wasted: st.BytesReadData - st.BytesReadUsefulData, Rates: rates}
	for ip, n := range trace.FromPeers {
		if ip == "127.0.0.1" { // the seeder's address; nodes listen on 127.0.0.2 and up
			rep.FromSeeder += n
		} else {
			rep.FromPeers += n
		}
	}
	if err := report(rep); err != nil {
		return err
	}
	// Keep seeding, as an agent does, until the benchmark is over.
	_, _ = io.Copy(io.Discard, stdin)
	return nil
}

func makeArtifact(path string, size int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), f.Sync()
}

func parseBytes(s string) int64 {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad size %q\n", s)
		os.Exit(2)
	}
	return int64(v * float64(mult))
}

func human(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
