package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	g "github.com/anacrolix/generics"
	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/mse"
	"github.com/anacrolix/torrent/storage"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/rollkeeper/rollkeeper/internal/p2p/classicio"
)

// Config configures a Client. The zero value of every field is usable except DataDir.
type Config struct {
	// DataDir holds the client's piece-completion database (CompletionDBName). Only one Client
	// at a time may use a DataDir.
	DataDir string
	// ListenHost is the IP address to listen on for peer connections ("" = all IPv4
	// addresses). When it is a specific IP, outgoing peer connections are bound to it too, so
	// peers see one address per client (the library bans misbehaving peers by IP).
	ListenHost string
	// ListenPort is the TCP port; 0 picks a free one (see Client.ListenPort).
	ListenPort int
	// UploadRate and DownloadRate limit peer traffic in bytes/s; 0 means unlimited.
	UploadRate, DownloadRate int64
	// Logger receives this package's and the library's messages (see LibraryErrorV).
	Logger logr.Logger
	// OnlyListedPeers accepts a peer connection only from an IP listed for the torrent it asks
	// for (Torrent.AddPeers, Torrent.AllowPeers); others are closed at accept, or right after
	// the handshake when the IP is listed for another torrent only. Outgoing connections go
	// only to added peers anyway. Off, anyone reaching the port may download what we seed.
	OnlyListedPeers bool
	// MaxPeersPerTorrent caps established connections per torrent (0: DefaultMaxPeersPerTorrent).
	MaxPeersPerTorrent int
	// MaxAcceptedConns caps accepted connections open at once (0: DefaultMaxAcceptedConns).
	MaxAcceptedConns int
	// WebSeedAfter is how long a download may go without a useful byte from its peers before
	// its web seeds (the origin) are used (0: DefaultWebSeedAfter; negative: at once). The
	// origin is the fallback, not a source competing with the swarm: used from the start, it
	// serves pieces the peers are about to have, and every downloader then requests the
	// seeder's pieces in the same (descending) order, so the seeder uploads duplicates.
	WebSeedAfter time.Duration
	// OriginSeeding makes the torrents this client seeds upload each piece about once while
	// the peers download, and leave the peers to serve each other (see doc.go): for the
	// operator's seeder, whose upload is the origin's. Agents leave it off.
	OriginSeeding bool
}

// DefaultWebSeedAfter is Config.WebSeedAfter's default: long against a swarm's start (its first
// useful byte comes within a second), short against a rollout.
const DefaultWebSeedAfter = 5 * time.Second

// CompletionDBName is the bolt database in Config.DataDir recording verified pieces per info
// hash.
const CompletionDBName = ".torrent.bolt.db"

// Errors.
var (
	ErrMismatch   = errors.New("local file does not match the metainfo")
	ErrDuplicate  = errors.New("torrent already added to this client")
	ErrDropped    = errors.New("torrent dropped")
	ErrMmapFileIO = errors.New(classicio.EnvVar + "=mmap is set: torrent data would be mmapped (RSS ≈ file size)")
)

// FileIO reports the file I/O the torrent library uses in this process: "classic" unless the
// environment explicitly asked for "mmap" (see package classicio).
func FileIO() string { return classicio.Effective }

// EnsureClassicFileIO returns nil when the library uses classic file I/O, as it does unless
// TORRENT_STORAGE_DEFAULT_FILE_IO=mmap was set explicitly in the environment, in which case it
// returns ErrMmapFileIO. No re-exec is needed: importing this package sets the variable before
// the library reads it (package classicio). A main can call it first thing to refuse mmap.
func EnsureClassicFileIO() error {
	if FileIO() != "classic" {
		return ErrMmapFileIO
	}
	return nil
}

// Client is one BitTorrent client (one listening port, one completion database). Create one per
// process with New and Close it when done.
type Client struct {
	cl         *torrent.Client
	completion storage.PieceCompletion
	slogger    *slog.Logger
	log        logr.Logger
	listenHost string
	listener   net.Listener
	gate       *gate
	// download is the download rate limiter (nil: unlimited); tests drain it.
	download *rate.Limiter
	// webSeedAfter is Config.WebSeedAfter with its default applied.
	webSeedAfter  time.Duration
	originSeeding bool

	mu       sync.Mutex
	torrents map[string]*Torrent // by info hash hex
	origins  map[netip.Addr]bool // IPs marked Peer.Origin
	// wg counts the torrents' web seed fallback goroutines; Close waits for them.
	wg sync.WaitGroup

	tracers *tracers
}

// limiter returns a rate limiter for bytesPerSec (nil when 0 = unlimited). Burst 0 lets the
// library pick one that fits a chunk (upload) or read buffer (download, at least 1 MiB).
//
// Unlimited must be nil, not rate.Inf: v1.61.0 turns a zero burst on an Inf download limiter
// into int(float64(MaxInt)), which overflows to a negative burst; Tokens() is then negative and
// the client refuses every connection ("don't want conns right now").
func limiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), 0)
}

// rcvBufControl sets the receive buffer of peer connections to 1/16 s of a capped download rate
// (at least 64 KiB): a deeper buffer only queues chunks behind the rate limiter, sent by peers
// that would rather have sent others by the time they are read (and the origin's are then
// wasted). Uncapped, the kernel sizes it.
func rcvBufControl(downloadRate int64) func(network, address string, rc syscall.RawConn) error {
	if downloadRate <= 0 {
		return nil
	}
	size := int(min(max(downloadRate/16, 64<<10), 16<<20))
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}); err != nil {
			return err
		}
		return serr
	}
}

// New starts a Client: TCP only on ListenHost:ListenPort, no DHT, trackers, PEX, uTP, UPnP,
// WebTorrent or IPv6 (unless ListenHost is IPv6); peers come only from Torrent.AddPeers and the
// metainfo's web seeds.
func New(cfg Config) (*Client, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("p2p: Config.DataDir is required")
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("p2p: listen port %d out of range", cfg.ListenPort)
	}
	var listenIP netip.Addr
	if cfg.ListenHost != "" {
		var err error
		if listenIP, err = netip.ParseAddr(cfg.ListenHost); err != nil {
			return nil, fmt.Errorf("p2p: listen host must be an IP address: %w", err)
		}
	}
	ipv6 := listenIP.IsValid() && listenIP.Is6() && !listenIP.Is4In6()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	bolt, err := storage.NewBoltPieceCompletion(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("p2p: opening %s in %s (in use by another client?): %w", CompletionDBName, cfg.DataDir, err)
	}
	completion := completionStore{bolt}
	logger := cfg.Logger.WithName("p2p")
	slogger := slog.New(newLevelHandler(logger.WithName("torrent")))

	if cfg.MaxPeersPerTorrent <= 0 {
		cfg.MaxPeersPerTorrent = DefaultMaxPeersPerTorrent
	}
	if cfg.MaxAcceptedConns <= 0 {
		cfg.MaxAcceptedConns = DefaultMaxAcceptedConns
	}
	if cfg.WebSeedAfter == 0 {
		cfg.WebSeedAfter = DefaultWebSeedAfter
	}
	gt := newGate(cfg.OnlyListedPeers, cfg.MaxAcceptedConns, logger)
	network := "tcp4"
	if ipv6 {
		network = "tcp6"
	}
	// Our own listener, so that every accepted connection passes the gate first; the library
	// opens none (DisableTCP only stops it listening: it still dials TCP with our dialer).
	control := rcvBufControl(cfg.DownloadRate)
	lc := net.ListenConfig{Control: control} // accepted connections inherit the buffer size
	ln, err := lc.Listen(context.Background(), network, net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.ListenPort)))
	if err != nil {
		completion.Close()
		return nil, fmt.Errorf("p2p: %w", err)
	}

	tc := torrent.NewDefaultClientConfig()
	// Storage: per-torrent file storage is passed to AddTorrentOpt; this default is never used
	// by our torrents but keeps the library from opening its own completion database.
	tc.DataDir = cfg.DataDir
	tc.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{
		ClientBaseDir:   cfg.DataDir,
		PieceCompletion: completion,
		UsePartFiles:    g.Some(false),
		Logger:          slogger,
	})
	// Listening and dialing: TCP only, explicit address.
	host := cfg.ListenHost
	tc.ListenHost = func(string) string { return host }
	tc.ListenPort = cfg.ListenPort
	tc.DisableTCP = true
	tc.DisableUTP = true
	tc.DisableIPv6 = !ipv6
	tc.DisableIPv4 = ipv6
	tc.DisableIPv4Peers = ipv6
	tc.AcceptPeerConnections = true
	// The library has no socket of its own to dial from; we add a dialer (below).
	tc.DialForPeerConns = false
	// The gate limits accepts instead (see gate): the library's limiter refuses a whole /24.
	tc.DisableAcceptRateLimiting = true
	tc.Callbacks.CompletedHandshake = gt.completedHandshake
	trs := &tracers{}
	tc.Callbacks.PeerConnAdded = append(tc.Callbacks.PeerConnAdded, trs.peerConnAdded)
	tc.Callbacks.ReceivedUsefulData = append(tc.Callbacks.ReceivedUsefulData, trs.receivedUsefulData)
	// Connection caps: established per torrent, half-open per torrent and in total.
	tc.EstablishedConnsPerTorrent = cfg.MaxPeersPerTorrent
	tc.HalfOpenConnsPerTorrent = 25
	tc.TotalHalfOpenConns = 100
	tc.PublicIp4, tc.PublicIp6 = nil, nil
	// Peer discovery: only what the caller adds.
	tc.NoDHT = true
	tc.PeriodicallyAnnounceTorrentsToDht = false
	tc.DhtStartingNodes = nil
	tc.DisableTrackers = true
	tc.DisablePEX = true
	tc.NoDefaultPortForwarding = true
	tc.DisableWebtorrent = true
	tc.DisableWebseeds = false
	// Uploading: seed completed torrents to anyone who asks.
	tc.Seed = true
	tc.NoUpload = false
	tc.DropMutuallyCompletePeers = true
	// The peers of a swarm cooperate: upload to any peer that wants a piece, not only to those
	// that upload to us in return (the library's default caps that at 100 KiB ahead).
	tc.UploadWithoutReciprocity = true
	// Two nodes that learn of each other at once dial each other: keep one connection per
	// peer (the library picks the same one on both sides, by peer ID). Both connections carried
	// requests, and the same chunks arrived on each (bench-distribution's wasted bytes).
	tc.DropDuplicatePeerIds = true
	tc.UploadRateLimiter = limiter(cfg.UploadRate)
	if tc.UploadRateLimiter == nil {
		// The library dereferences the upload limiter; Inf is safe there (burst 0 becomes
		// MaxAllocPeerRequestDataPerConn).
		tc.UploadRateLimiter = rate.NewLimiter(rate.Inf, 0)
	}
	tc.DownloadRateLimiter = limiter(cfg.DownloadRate)
	// Trusted network: plaintext handshakes (no RC4 cost), obfuscated ones still accepted.
	tc.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{Preferred: false, RequirePreferred: false}
	tc.CryptoProvides = mse.AllSupportedCrypto
	// Web seeds: the library's own transport, proxies from the environment.
	tc.WebTransport = nil
	tc.HTTPProxy = http.ProxyFromEnvironment
	tc.HTTPUserAgent = "rollkeeper"
	// Logging.
	tc.Debug = false
	tc.Slogger = slogger
	tc.Logger = alog.Logger{} // zero: the library points it at Slogger

	cl, err := torrent.NewClient(tc)
	if err != nil {
		ln.Close()
		completion.Close()
		return nil, fmt.Errorf("p2p: starting torrent client: %w", err)
	}
	dialer := &net.Dialer{
		// BitTorrent connections manage their own keep-alives.
		KeepAlive: -1,
		Control:   control,
	}
	if listenIP.IsValid() && !listenIP.IsUnspecified() {
		dialer.LocalAddr = &net.TCPAddr{IP: listenIP.AsSlice()}
	}
	cl.AddDialer(torrent.NetworkDialer{Network: network, Dialer: dialer})
	cl.AddListener(gateListener{Listener: ln, g: gt})
	c := &Client{
		cl:            cl,
		completion:    completion,
		slogger:       slogger,
		log:           logger,
		listenHost:    host,
		listener:      ln,
		gate:          gt,
		download:      tc.DownloadRateLimiter,
		webSeedAfter:  cfg.WebSeedAfter,
		originSeeding: cfg.OriginSeeding,
		torrents:      map[string]*Torrent{},
		origins:       map[netip.Addr]bool{},
		tracers:       trs,
	}
	logger.V(1).Info("torrent client started", "addr", c.Addr(), "dataDir", cfg.DataDir, "fileIO", FileIO(),
		"uploadRate", cfg.UploadRate, "downloadRate", cfg.DownloadRate)
	return c, nil
}

// Close drops every torrent, stops the client and closes the completion database.
func (c *Client) Close() error {
	errs := c.cl.Close()
	c.wg.Wait() // the library closed every torrent, which ends their goroutines
	// After the client: its accept loop ends on the first error once the client is closed (an
	// error before that would be retried at once, in a loop).
	if err := c.listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, err)
	}
	errs = append(errs, c.completion.Close())
	return errors.Join(errs...)
}

// RefusedConns counts the peer connections refused so far (OnlyListedPeers, caps, accept rate),
// and those closed because AllowPeers no longer lists their address.
func (c *Client) RefusedConns() int64 { return c.gate.rejected.Load() }

// WaitRefused blocks until RefusedConns exceeds n, or ctx ends (returning its error). It is
// signalled by each refusal, not polled.
func (c *Client) WaitRefused(ctx context.Context, n int64) error {
	for {
		count, next := c.gate.refusals()
		if count > n {
			return nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return fmt.Errorf("waiting for a refused peer connection (refused %d): %w", count, ctx.Err())
		}
	}
}

// WriteStatus writes the library's view of every torrent and connection (request queues,
// choke and interest states, last messages): what explains a stalled download.
func (c *Client) WriteStatus(w io.Writer) { c.cl.WriteStatus(w) }

// Refusals returns RefusedConns and a channel closed at the next refusal: a follower of a
// swarm's peer set reads it again when someone it does not know yet asked to connect.
func (c *Client) Refusals() (int64, <-chan struct{}) { return c.gate.refusals() }

// ListenPort is the TCP port the client accepts peers on.
func (c *Client) ListenPort() int { return c.cl.LocalPort() }

// Addr is the host:port peers should dial (ListenHost, or 127.0.0.1 if it was unspecified).
func (c *Client) Addr() string {
	host := c.listenHost
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(c.ListenPort()))
}

// Seed serves a complete local file. All pieces are hashed first; if the file does not match
// mi, the torrent is dropped and the error wraps ErrMismatch.
func (c *Client) Seed(ctx context.Context, mi MetaInfo, file string) (*Torrent, error) {
	if err := mi.valid(); err != nil {
		return nil, err
	}
	file, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", mi.Name, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != mi.Size {
		return nil, fmt.Errorf("seed %s: %s has %d bytes, want %d: %w", mi.Name, file, fi.Size(), mi.Size, ErrMismatch)
	}
	// In-memory completion: every piece starts unknown, so the library hashes all of them.
	st := c.fileStorage(filepath.Dir(file), filepath.Base(file), storage.NewMapPieceCompletion())
	t, err := c.add(mi, st, file, false)
	if err != nil {
		return nil, err
	}
	if err := t.waitVerified(ctx); err != nil {
		t.Drop()
		return nil, fmt.Errorf("seed %s: %w", mi.Name, err)
	}
	if c.originSeeding {
		t.t.SetOriginSeeding(true)
	}
	c.log.V(1).Info("seeding", "name", mi.Name, "infoHash", mi.InfoHash, "file", file, "origin", c.originSeeding)
	return t, nil
}

// Download fetches mi into dir/mi.Name (see Torrent.Path) from the peers given to
// Torrent.AddPeers, and from mi's web seeds once the peers delivered nothing for
// Config.WebSeedAfter (Trace.WebSeedsAdded says when); Torrent.Wait returns when every piece is
// verified.
// Pieces verified earlier by any Client with the same DataDir are kept (resume) as long as the
// file is still there; pieces of unknown state found in the file are hashed. After completion the
// torrent keeps seeding until dropped. ctx bounds this call only; stop a download with Drop.
func (c *Client) Download(ctx context.Context, mi MetaInfo, dir string) (*Torrent, error) {
	if err := mi.valid(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("download %s: %w", mi.Name, err)
	}
	path := filepath.Join(dir, mi.Name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		// Completion records without their data (file removed): forget them, or the library
		// would trust them until its size check.
		if err := c.forget(mi); err != nil {
			return nil, fmt.Errorf("download %s: %w", mi.Name, err)
		}
	}
	t, err := c.add(mi, c.fileStorage(dir, mi.Name, c.completion), path, true)
	if err != nil {
		return nil, err
	}
	t.t.DownloadAll()
	if len(mi.WebSeeds) > 0 {
		t.startWebSeedFallback(c.webSeedAfter)
	}
	c.log.V(1).Info("downloading", "name", mi.Name, "infoHash", mi.InfoHash, "file", path)
	return t, nil
}

// Forget deletes what the completion database knows about mi's pieces, so that the next
// Download hashes whatever data it finds instead of trusting earlier verification. Use it when
// a finished file fails its end-to-end check (e.g. sha256), before downloading again. mi must
// not be in the client.
func (c *Client) Forget(mi MetaInfo) error {
	if err := mi.valid(); err != nil {
		return err
	}
	c.mu.Lock()
	_, busy := c.torrents[mi.InfoHash]
	c.mu.Unlock()
	if busy {
		return fmt.Errorf("forget %s: %w", mi.Name, ErrDuplicate)
	}
	return c.forget(mi)
}

func (c *Client) forget(mi MetaInfo) error {
	for i := range mi.NumPieces {
		key := metainfo.PieceKey{InfoHash: mi.hash, Index: i}
		if st, err := c.completion.Get(key); err == nil && !st.Complete {
			// Nothing recorded, or recorded incomplete: writing it again costs a transaction
			// per piece, most of a new download's start.
			continue
		}
		if err := c.completion.Set(key, false); err != nil {
			return err
		}
	}
	return nil
}

// fileStorage stores the torrent's single file at dir/name, written in place (no .part file,
// so resume relies on the completion store).
func (c *Client) fileStorage(dir, name string, pc storage.PieceCompletion) storage.ClientImpl {
	return fixShortWrite{storage.NewFileOpts(storage.NewFileClientOpts{
		ClientBaseDir: dir,
		TorrentDirMaker: func(baseDir string, _ *metainfo.Info, _ metainfo.Hash) string {
			return baseDir
		},
		FilePathMaker: func(storage.FilePathMakerOpts) string {
			return name
		},
		PieceCompletion: pc,
		UsePartFiles:    g.Some(false),
		Logger:          c.slogger,
	})}
}

func (c *Client) add(mi MetaInfo, st storage.ClientImpl, path string, download bool) (*Torrent, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.torrents[mi.InfoHash]; ok {
		return nil, fmt.Errorf("%s (%s): %w", mi.Name, mi.InfoHash, ErrDuplicate)
	}
	tt, isNew := c.cl.AddTorrentOpt(torrent.AddTorrentOpts{
		InfoHash:  mi.hash,
		Storage:   st,
		InfoBytes: mi.rawInfo,
	})
	if !isNew {
		return nil, fmt.Errorf("%s (%s): %w", mi.Name, mi.InfoHash, ErrDuplicate)
	}
	t := newTorrent(c, tt, mi, path, download)
	c.tracers.m.Store(tt, &t.trace)
	c.torrents[mi.InfoHash] = t
	return t, nil
}

// allow lists ips for t while t is in the client (a dropped torrent lists nothing).
func (c *Client) allow(t *Torrent, ips []netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.torrents[t.mi.InfoHash] == t {
		c.gate.allow(t.mi.hash, ips)
	}
}

func (c *Client) setAllowed(t *Torrent, ips []netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.torrents[t.mi.InfoHash] == t {
		c.gate.set(t.mi.hash, ips)
	}
}

func (c *Client) remove(t *Torrent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.torrents[t.mi.InfoHash] == t {
		delete(c.torrents, t.mi.InfoHash)
		c.gate.forget(t.mi.hash)
		c.tracers.m.Delete(t.t)
	}
}

// pollInterval bounds how stale a wait's view of library state can get when the library offers
// no signal for the condition.
const pollInterval = 50 * time.Millisecond
