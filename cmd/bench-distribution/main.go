// Command bench-distribution measures how long it takes to get one artifact to N nodes, peer to
// peer (BitTorrent, ZooKeeper as tracker, the origin seeding once plus web seed) versus plain
// HTTP from the origin, under per-link rate limits that model a network (every peer's upload
// and download and the origin's upload limited to R bytes/s). It prints figures; it never
// passes or fails on them. Each node is a separate process, so its peak RSS is its own.
//
//	bench-distribution [-n 8] [-size 32MiB] [-rate 4MiB] [-mode both|p2p|http]
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
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
	n := flag.Int("n", 8, "number of nodes")
	size := flag.String("size", "32MiB", "artifact size")
	rateS := flag.String("rate", "4MiB", "bytes/s of every link: each node's upload and download, the origin's upload")
	mode := flag.String("mode", "both", "both, p2p or http")
	dir := flag.String("dir", "", "work directory on a real disk (default: a new one under /var/tmp)")
	flag.Parse()
	if err := run(*n, parseBytes(*size), parseBytes(*rateS), *mode, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "bench-distribution:", err)
		os.Exit(1)
	}
}

type result struct {
	name         string
	wall         time.Duration
	originBytes  int64
	peakRSS      []int64
	perNodeTimes []time.Duration
}

func run(n int, size, r int64, mode, dir string) error {
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
	sum, err := makeArtifact(file, size)
	if err != nil {
		return err
	}
	origin, err := newOrigin(file, r)
	if err != nil {
		return err
	}
	defer origin.close()
	fmt.Printf("artifact %s, %d nodes, every link %s/s\n\n", human(size), n, human(r))

	var results []result
	if mode == "both" || mode == "http" {
		res, err := benchHTTP(ctx, dir, n, origin, sum)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		results = append(results, res)
	}
	if mode == "both" || mode == "p2p" {
		res, err := benchP2P(ctx, dir, n, size, r, origin, file, sum)
		if err != nil {
			return fmt.Errorf("p2p: %w", err)
		}
		results = append(results, res)
	}
	F, R, N := float64(size), float64(r), float64(n)
	bound := max(F/R, N*F/(R+N*R))
	fmt.Printf("%-6s %12s %14s %12s %14s %16s\n", "mode", "time", "lower bound", "efficiency", "origin bytes", "peak RSS (max)")
	for _, res := range results {
		var maxRSS int64
		for _, v := range res.peakRSS {
			maxRSS = max(maxRSS, v)
		}
		fmt.Printf("%-6s %11.2fs %13.2fs %11.0f%% %14s %16s\n", res.name, res.wall.Seconds(), bound,
			100*bound/res.wall.Seconds(), human(res.originBytes), human(maxRSS))
	}
	if len(results) == 2 {
		fmt.Printf("\nspeed-up of p2p over http: %.1fx (http expected near N*F/R = %.1fs)\n",
			results[0].wall.Seconds()/results[1].wall.Seconds(), N*F/R)
	}
	for _, res := range results {
		fmt.Printf("%s per-node peak RSS:", res.name)
		for _, v := range res.peakRSS {
			fmt.Printf(" %s", human(v))
		}
		fmt.Println()
	}
	return nil
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

func benchHTTP(ctx context.Context, dir string, n int, o *origin, sum string) (result, error) {
	before := o.served.Load()
	res := result{name: "http"}
	var err error
	res.wall, err = runNodes(n, &res, func(i int) []string {
		return []string{"node", "-mode=http", "-url=" + o.url, "-sha=" + sum, "-dir=" + filepath.Join(dir, "http", strconv.Itoa(i))}
	})
	res.originBytes = o.served.Load() - before
	return res, err
}

func benchP2P(ctx context.Context, dir string, n int, size, r int64, o *origin, file, sum string) (result, error) {
	zk, err := zkserver.Start(ctx, filepath.Join(dir, "zk"), 1)
	if err != nil {
		return result{}, err
	}
	defer zk.Stop()
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(zk.Connect()), Logger: logr.Discard()})
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	tr := tracker.Tracker{ZK: c, Layout: zklayout.MustNew("/bench")}
	for _, p := range tr.Layout.Bases() {
		if err := c.EnsurePath(ctx, p); err != nil {
			return result{}, err
		}
	}
	seedCl, err := p2p.New(p2p.Config{DataDir: filepath.Join(dir, "seeder"), ListenHost: "127.0.0.1", UploadRate: r, Logger: logr.Discard()})
	if err != nil {
		return result{}, err
	}
	defer seedCl.Close()
	mi, err := p2p.BuildMetaInfo(ctx, file, "artifact.bin", []string{o.url})
	if err != nil {
		return result{}, err
	}
	if err := tr.Publish(ctx, zklayout.Torrent{Service: "bench", Version: "v1", InfoHash: mi.InfoHash, Size: mi.Size, PieceLength: mi.PieceLength}, mi.Bytes); err != nil {
		return result{}, err
	}
	t, err := seedCl.Seed(ctx, mi, file)
	if err != nil {
		return result{}, err
	}
	if _, err := tr.Register(ctx, mi.InfoHash, zklayout.Peer{Node: "origin", Host: "127.0.0.1", Port: seedCl.ListenPort(), Complete: true}); err != nil {
		return result{}, err
	}
	before := o.served.Load()
	res := result{name: "p2p"}
	res.wall, err = runNodes(n, &res, func(i int) []string {
		return []string{"node", "-mode=p2p", "-url=" + o.url, "-sha=" + sum, "-dir=" + filepath.Join(dir, "p2p", strconv.Itoa(i)),
			"-zk=" + zk.Connect(), "-host=" + fmt.Sprintf("127.0.0.%d", i+2), "-rate=" + strconv.FormatInt(r, 10), "-name=node-" + strconv.Itoa(i)}
	})
	res.originBytes = o.served.Load() - before + t.Stats().BytesWrittenData
	return res, err
}

// runNodes starts n node processes and returns when every one has fetched the artifact (each
// prints "done", then keeps seeding until its stdin closes); it records their peak RSS.
func runNodes(n int, res *result, args func(i int) []string) (time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	cmds := make([]*exec.Cmd, n)
	stdins := make([]io.Closer, n)
	done := make(chan error, n)
	for i := 0; i < n; i++ {
		cmd := exec.Command(self, args(i)...)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return 0, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		cmds[i], stdins[i] = cmd, in
		go func() {
			b, _ := io.ReadAll(io.LimitReader(out, 5))
			if string(b) != "done\n" {
				done <- fmt.Errorf("node %d did not finish", i)
				return
			}
			done <- nil
		}()
	}
	var firstErr error
	for i := 0; i < n; i++ {
		if err := <-done; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	wall := time.Since(start)
	res.peakRSS = make([]int64, n)
	for i, cmd := range cmds {
		stdins[i].Close()
		_ = cmd.Wait()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.peakRSS[i] = ru.Maxrss * 1024
		}
	}
	return wall, firstErr
}

// node is one simulated node: it fetches the artifact and exits.
func node(args []string) error {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	mode := fs.String("mode", "p2p", "")
	url := fs.String("url", "", "")
	sha := fs.String("sha", "", "")
	dir := fs.String("dir", "", "")
	zkc := fs.String("zk", "", "")
	host := fs.String("host", "127.0.0.1", "")
	r := fs.Int64("rate", 0, "")
	name := fs.String("name", "node", "")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rel := &zklayout.Release{Service: "bench", Version: "v1", Artifact: zklayout.Artifact{URL: *url, SHA256: *sha, Unpack: zklayout.UnpackNone}}
	dest := filepath.Join(*dir, "installed")
	if *mode == "http" {
		if err := fetch.NewHTTP().Fetch(ctx, rel, dest); err != nil {
			return err
		}
		fmt.Println("done")
		return nil
	}
	c, err := zkclient.Dial(ctx, zkclient.Config{Servers: zkclient.ParseServers(*zkc), Logger: logr.Discard()})
	if err != nil {
		return err
	}
	defer c.Close()
	cl, err := p2p.New(p2p.Config{DataDir: filepath.Join(*dir, "torrent"), ListenHost: *host, UploadRate: *r, DownloadRate: *r, Logger: logr.Discard()})
	if err != nil {
		return err
	}
	defer cl.Close()
	f := fetch.NewP2P(fetch.P2PConfig{Client: cl, Tracker: tracker.Tracker{ZK: c, Layout: zklayout.MustNew("/bench")},
		Node: *name, Host: *host, DataDir: filepath.Join(*dir, "torrent", "data"), Logger: logr.Discard()})
	defer f.Close()
	if err := f.Fetch(ctx, rel, dest); err != nil {
		return err
	}
	fmt.Println("done")
	// Keep seeding, as an agent does, until the benchmark is over.
	_, _ = io.Copy(io.Discard, os.Stdin)
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
