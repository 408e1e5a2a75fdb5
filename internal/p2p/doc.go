// Package p2p distributes artifacts peer to peer with BitTorrent (github.com/anacrolix/torrent
// v1.61.0, TCP only). It knows nothing about ZooKeeper: callers publish the metainfo bytes and
// peer addresses themselves (the agent uses ZooKeeper as the tracker).
//
// # API
//
//	BuildMetaInfo(ctx, path, name, webSeeds) (MetaInfo, error)  // hash a file; piece length from PieceLength(size)
//	ParseMetaInfo(b []byte) (MetaInfo, error)                    // validate received .torrent bytes
//	New(Config) (*Client, error); (*Client).Close() error         // one client per process
//	(*Client).ListenPort() int; (*Client).Addr() string
//	(*Client).Seed(ctx, mi, file) (*Torrent, error)              // hash-check a complete local file, then serve it
//	(*Client).Download(ctx, mi, dir) (*Torrent, error)           // fetch into dir/mi.Name, resuming
//	(*Client).Forget(mi) error                                   // discard recorded piece completion
//	(*Torrent).AddPeers([]Peer) error; (*Torrent).AllowPeers([]Peer) error
//	(*Torrent).Wait(ctx) error; (*Torrent).Drop(); (*Client).RefusedConns() int64
//	(*Torrent).Downloaded(ctx) error; (*Torrent).Sync() error  // Wait's two halves, to overlap the sync
//	(*Client).WaitRefused(ctx, n) error                          // until RefusedConns() > n (signalled)
//	(*Torrent).Path() string; (*Torrent).Progress() Progress; (*Torrent).Stats() Stats
//	(*Torrent).Trace() Trace                                     // first peer, first data, bytes by source
//	FileIO() string; EnsureClassicFileIO() error
//
// MetaInfo describes one file (BitTorrent v1, single file, deterministic bytes, optional BEP 19
// web seeds such as the origin URL). Piece lengths are powers of two from 16 KiB to 16 MiB;
// BuildMetaInfo picks at least 256 KiB (BuildMinPieceLength) and at most TargetMaxPieces (2048)
// pieces while it can.
//
// # Client configuration
//
// New starts from torrent.NewDefaultClientConfig and sets every relevant field: listen on
// Config.ListenHost:ListenPort, TCP only (no uTP), IPv6 only if ListenHost is IPv6; no DHT, no
// trackers, no PEX, no UPnP/NAT-PMP, no WebTorrent; web seeds used only once the peers delivered
// nothing for Config.WebSeedAfter; plaintext handshakes
// preferred; Seed on (completed torrents upload to any peer the gate admits, below); upload
// and download rate limits (0 = unlimited). Peers come only from Torrent.AddPeers and the web seeds. When ListenHost is a
// specific IP, outgoing connections are bound to it as well: the library bans misbehaving peers
// by IP, so several clients on one machine need distinct IPs (127.0.0.N on loopback) or one bad
// client gets all of them banned.
//
// # The origin once, the swarm for the rest
//
// A swarm's origin is the seeder that holds every piece from the start (the operator's, which
// read the artifact's URL once). Peers added with Peer.Origin are asked only for pieces no other
// connected peer holds, with a fixed, short request queue, and their data is read ahead of the
// other peers' within the download cap; a seeder with Config.OriginSeeding sends a piece's
// chunks to one downloader at a time, and to a downloader that completes pieces slowly only when
// no faster one is waiting (once it had a quarter of a faster one's share). The web seeds (the URL itself) are used only once a
// download got nothing from its peers for Config.WebSeedAfter. Downloaders upload to any peer
// that wants a piece, without asking for as much back. Together, a swarm takes about one copy
// from its origin, and a node that joins a complete swarm none (TestOriginServesAboutOneCopy;
// docs/design.md, "Where the bytes come from"; patches in third_party/forked/anacrolix-torrent).
//
// # Who may connect
//
// The client listens through its own listener, so every accepted connection passes a gate
// first: at most MaxAcceptedConns open (default 200), 16 per source IP, 100 accepts/s (burst
// 200). This replaces the library's accept rate limiting (DisableAcceptRateLimiting), which
// refuses a whole /24 for up to 15 minutes after one bad handshake. With
// Config.OnlyListedPeers, a connection is accepted only from an IP listed for some torrent of
// the client (Torrent.AddPeers, Torrent.AllowPeers), and closed right after the BitTorrent
// handshake, before any piece, if the IP is not listed for the torrent it asked for. AddPeers
// adds to a torrent's list; AllowPeers replaces it, and closes the connections that addresses
// no longer listed opened to us for that torrent (the seeder keeps each list in step with the
// swarm). RefusedConns counts refusals (and those closures). Established connections per torrent are capped by
// MaxPeersPerTorrent (default 50), half-open ones at 25 per torrent and 100 in total.
//
// # Storage, completion and resume
//
// Data is written in place with the library's file storage (no .part files): a download goes to
// dir/mi.Name, a seed reads the given file. Which pieces are verified is recorded per info hash
// in a bolt database, Config.DataDir/.torrent.bolt.db (pure Go; the library's default, sqlite,
// needs cgo). A new Client on the same DataDir resumes a download in the same dir: recorded
// pieces are trusted if the file is long enough, pieces of unknown state are hashed, only the
// rest is fetched. If the file is gone, Download forgets the records first. Only one Client may
// open a DataDir at a time. Seeding uses in-memory completion and hashes the whole file before
// Seed returns. The library fsyncs nothing per piece here (see completionStore); Wait fsyncs the
// finished file once. Callers should still check the finished file's sha256 and call Forget
// before retrying if it does not match.
//
// # Classic file I/O
//
// The library mmaps data files unless TORRENT_STORAGE_DEFAULT_FILE_IO=classic is in the
// environment when its storage package initialises (storage/file-io-mmap.go, init). Importing
// this package sets it (package classicio, initialised before the library by Go's package
// initialisation order), unless the environment explicitly says "mmap". FileIO reports the mode;
// EnsureClassicFileIO returns ErrMmapFileIO for "mmap" so a main can refuse to start.
//
// # Logging
//
// The library logs through log/slog into Config.Logger, at V(LibraryErrorV=2) for its errors up
// to V(LibraryDebugV=6) for debug messages: quiet at the default verbosity. This package logs
// client start, seeding and downloading at V(1). Errors that matter are returned: Wait returns
// chunk write errors (e.g. ENOSPC) and ErrDropped.
//
// # Concurrency
//
// Every wait selects on its ctx. The package starts one goroutine per download with web seeds
// (the web seed fallback, ended by completion, Torrent.Drop or Client.Close, which waits for it);
// the library's stop on Torrent.Drop and Client.Close.
package p2p
