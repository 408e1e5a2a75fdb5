// Package zkclient owns rollkeeper's ZooKeeper sessions: dialing, session-expiry tracking,
// context checks, error translation and watch accounting. It is the only package that imports
// go-zookeeper; the rest of rollkeeper speaks in its types and sentinel errors.
package zkclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-zookeeper/zk"
)

// Sentinel errors; test with errors.Is.
var (
	ErrNoNode         = errors.New("znode does not exist")
	ErrNodeExists     = errors.New("znode already exists")
	ErrBadVersion     = errors.New("znode version changed")
	ErrNotEmpty       = errors.New("znode has children")
	ErrSessionExpired = errors.New("zookeeper session expired")
	ErrClosed         = errors.New("zookeeper client closed")
	ErrUnavailable    = errors.New("zookeeper unavailable")
	// ErrNoAuth: the znode's ACL does not let this client's identity make the change. With digest
	// auth every rollkeeper component must use the same credentials (Config.Auth).
	ErrNoAuth = errors.New("not authorized by the znode's ACL (every rollkeeper component must use the same --zk-auth credentials)")
)

// Config says how to reach the ensemble.
type Config struct {
	// Servers are host:port pairs of the ensemble.
	Servers []string
	// SessionTimeout bounds how long ephemeral znodes outlive a silent client.
	SessionTimeout time.Duration
	// DialTimeout bounds the wait for the first session.
	DialTimeout time.Duration
	// Auth is an optional "user:password" for the digest scheme. With it, the znodes this client
	// creates may be changed only by the same identity (anyone may read them); without it they
	// are open to every client (world ACL).
	Auth string
	// TLS, if set, makes every connection TLS (ZooKeeper's secureClientPort): the servers'
	// certificates are checked against its RootCAs and ServerName (the host of each address when
	// empty), and its certificate is presented to servers that ask for one (LoadTLS builds it).
	TLS *tls.Config
	// Logger receives the library's own log lines.
	Logger logr.Logger
	// SendBuffer bounds a request's encoded size (0: the library's 1.5 MiB). The client holds
	// one such buffer per connection for its life: an agent, whose largest request is a
	// decision's transaction, needs far less (AgentSendBuffer), and thousands of agents in one
	// process (the scale benchmark) feel the difference.
	SendBuffer int
	// RecvBuffer bounds a response's size (0: the library's 1.5 MiB to start with, grown for
	// any larger response). The client holds one such buffer per connection for its life. A
	// larger response closes the connection, and the client reconnects and fails the same way,
	// so it must exceed the largest child list the client reads (about N·(len(name)+4) bytes
	// for N nodes): set it only where names and fleet are known, like the scale benchmark.
	RecvBuffer int
}

// AgentSendBuffer is the agents' SendBuffer: room for a decision's transaction at
// rollout.MaxAdmit nodes (about 200 KiB with short names; the agent cuts a batch at half this
// buffer). A larger request fails with an error, never a crash.
const AgentSendBuffer = 512 << 10

// ParseServers splits a comma-separated connect string ("h1:2181,h2:2181").
func ParseServers(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Session identifies one ZooKeeper session; Done closes when the session expires or the client
// closes. Ephemeral znodes created in it are gone by then.
type Session struct {
	ID   int64
	Done <-chan struct{}
}

// Client is one ZooKeeper connection shared by its owner's goroutines.
type Client struct {
	conn *zk.Conn
	log  logr.Logger
	acl  []zk.ACL // of every znode this client creates
	// sessionTimeout is the timeout asked for when dialing.
	sessionTimeout time.Duration

	auth string // digest credentials, "" without

	mu     sync.Mutex
	done   chan struct{}
	closed bool
	// established closes at the next session establishment (SessionEstablished).
	established chan struct{}

	watchesFired atomic.Int64

	// Requests sent to the ensemble, for traffic accounting (Traffic).
	reads    atomic.Int64
	watches  atomic.Int64
	writes   atomic.Int64
	multiOps atomic.Int64

	// Session accounting for metrics, updated by the library's session events.
	hasSession  atomic.Bool
	hadSession  atomic.Bool
	reconnects  atomic.Int64
	expirations atomic.Int64
}

// SessionStats is the session's health, for metrics.
type SessionStats struct {
	// Connected: the client holds a live session with a server now.
	Connected bool
	// Reconnects counts sessions (re-)established after the first one: after a lost server
	// connection or an expired session.
	Reconnects int64
	// Expirations counts sessions that expired (their ephemeral znodes are gone).
	Expirations int64
}

// SessionStats reports the session's state and how often it was re-established.
func (c *Client) SessionStats() SessionStats {
	return SessionStats{Connected: c.hasSession.Load(), Reconnects: c.reconnects.Load(), Expirations: c.expirations.Load()}
}

// sessionEvent updates the session accounting; every state but HasSession means no session.
func (c *Client) sessionEvent(s zk.State) {
	switch s {
	case zk.StateHasSession:
		c.hasSession.Store(true)
		if c.hadSession.Swap(true) {
			c.reconnects.Add(1)
		}
	case zk.StateExpired:
		c.expirations.Add(1)
		c.hasSession.Store(false)
	default:
		c.hasSession.Store(false)
	}
}

// Dial connects and waits until a session is established, ctx is done, or cfg.DialTimeout passes.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("dial zookeeper: no servers given")
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	if cfg.Auth != "" {
		if err := ValidateAuth(cfg.Auth); err != nil {
			return nil, err
		}
	}
	c := &Client{log: cfg.Logger, done: make(chan struct{}), established: make(chan struct{}), auth: cfg.Auth,
		acl: aclFor(cfg.Auth), sessionTimeout: cfg.SessionTimeout}
	connected := make(chan struct{}, 1)
	authFailed := make(chan struct{}, 1)
	cb := func(ev zk.Event) {
		if ev.Type != zk.EventSession {
			return
		}
		c.sessionEvent(ev.State)
		switch ev.State {
		case zk.StateHasSession:
			c.signalEstablished()
			select {
			case connected <- struct{}{}:
			default:
			}
		case zk.StateAuthFailed:
			select {
			case authFailed <- struct{}{}:
			default:
			}
		case zk.StateExpired:
			c.log.Info("zookeeper session expired; ephemeral znodes are gone")
			c.rotateSession()
		}
	}
	dialer := zk.Dialer(net.DialTimeout)
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		dialer = func(network, address string, timeout time.Duration) (net.Conn, error) {
			// The handshake is bounded too: a server that accepts and says nothing must not
			// hold the connection loop.
			return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, network, address, tc)
		}
	}
	sendBuffer := zk.WithLogInfo(false) // a no-op repeat unless a send buffer size is set
	if cfg.SendBuffer > 0 {
		sendBuffer = zk.WithMaxConnBufferSize(cfg.SendBuffer)
	}
	recvBuffer := zk.WithLogInfo(false) // likewise, for the receive buffer
	if cfg.RecvBuffer > 0 {
		recvBuffer = zk.WithMaxBufferSize(cfg.RecvBuffer)
	}
	conn, _, err := zk.Connect(cfg.Servers, cfg.SessionTimeout,
		zk.WithLogger(logAdapter{cfg.Logger}), zk.WithEventCallback(cb), zk.WithLogInfo(false), zk.WithDialer(dialer), sendBuffer, recvBuffer)
	if err != nil {
		return nil, fmt.Errorf("dial zookeeper %v: %w", cfg.Servers, err)
	}
	c.conn = conn
	timer := time.NewTimer(cfg.DialTimeout)
	defer timer.Stop()
	select {
	case <-connected:
	case <-authFailed:
		conn.Close()
		return nil, fmt.Errorf("dial zookeeper %v: authentication failed", cfg.Servers)
	case <-timer.C:
		conn.Close()
		return nil, fmt.Errorf("dial zookeeper %v: no session after %s: %w", cfg.Servers, cfg.DialTimeout, ErrUnavailable)
	case <-ctx.Done():
		conn.Close()
		return nil, fmt.Errorf("dial zookeeper %v: %w", cfg.Servers, ctx.Err())
	}
	if cfg.Auth != "" {
		if err := conn.AddAuth("digest", []byte(cfg.Auth)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("zookeeper digest auth: %w", err)
		}
	}
	return c, nil
}

func (c *Client) rotateSession() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	close(c.done)
	c.done = make(chan struct{})
}

// Session returns the current session. Callers that hold ephemeral znodes watch Done and
// re-create their state in the next session.
func (c *Client) Session() Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Session{ID: c.conn.SessionID(), Done: c.done}
}

// SessionTimeout is the session timeout this client asked for: how long an ephemeral znode of
// a crashed owner may outlive it.
func (c *Client) SessionTimeout() time.Duration { return c.sessionTimeout }

// Close ends the session; its ephemeral znodes are removed at once.
func (c *Client) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.done)
	}
	c.mu.Unlock()
	c.conn.Close()
	c.hasSession.Store(false)
}

// WatchesFired counts watch events delivered to this client's callers (herd-effect accounting).
func (c *Client) WatchesFired() int64 { return c.watchesFired.Load() }

// Traffic counts the requests a client sent to the ensemble since it was dialed.
type Traffic struct {
	// Reads: Get, GetW, Exists, ExistsW, Children and ChildrenW calls, one each.
	Reads int64
	// Watches: the watches set, one per GetW, ExistsW and ChildrenW call (also counted in Reads).
	Watches int64
	// Writes: Create, Set, Delete and Multi calls, one each (a Multi is one request).
	Writes int64
	// MultiOps: the operations carried by the Multi calls, all kinds together.
	MultiOps int64
	// WatchesFired: watch events delivered to the callers (WatchesFired).
	WatchesFired int64
}

// Sub returns t minus o, field by field: the traffic between two readings.
func (t Traffic) Sub(o Traffic) Traffic {
	return Traffic{Reads: t.Reads - o.Reads, Watches: t.Watches - o.Watches, Writes: t.Writes - o.Writes,
		MultiOps: t.MultiOps - o.MultiOps, WatchesFired: t.WatchesFired - o.WatchesFired}
}

// Add returns t plus o, field by field.
func (t Traffic) Add(o Traffic) Traffic {
	return Traffic{Reads: t.Reads + o.Reads, Watches: t.Watches + o.Watches, Writes: t.Writes + o.Writes,
		MultiOps: t.MultiOps + o.MultiOps, WatchesFired: t.WatchesFired + o.WatchesFired}
}

// Traffic reports the requests sent so far. A request is counted when it is handed to the
// connection, whatever its outcome; calls refused before that (a done ctx) are not.
func (c *Client) Traffic() Traffic {
	return Traffic{Reads: c.reads.Load(), Watches: c.watches.Load(), Writes: c.writes.Load(),
		MultiOps: c.multiOps.Load(), WatchesFired: c.watchesFired.Load()}
}

// Stat is the metadata of a znode.
type Stat struct {
	Version  int32
	CVersion int32
	// Czxid is the transaction that created the znode, Mzxid the one that last set its data,
	// Pzxid the one that last created or deleted one of its children.
	Czxid          int64
	Mzxid          int64
	Pzxid          int64
	EphemeralOwner int64
	NumChildren    int32
	Mtime          time.Time
}

func convStat(s *zk.Stat) Stat {
	if s == nil {
		return Stat{}
	}
	return Stat{Version: s.Version, CVersion: s.Cversion, Czxid: s.Czxid, Mzxid: s.Mzxid, Pzxid: s.Pzxid, EphemeralOwner: s.EphemeralOwner,
		NumChildren: s.NumChildren, Mtime: time.UnixMilli(s.Mtime)}
}

// Watch is a one-shot ZooKeeper watch.
type Watch struct {
	c  *Client
	ch <-chan zk.Event
}

// Wait blocks until the watch fires (nil), the session is lost (ErrSessionExpired or
// ErrUnavailable: the caller re-reads and re-arms), or ctx ends.
func (w Watch) Wait(ctx context.Context) error {
	select {
	case ev, ok := <-w.ch:
		w.c.watchesFired.Add(1)
		if !ok || ev.Type == zk.EventNotWatching {
			if ev.Err != nil {
				return translate(ev.Err)
			}
			return ErrUnavailable
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// C exposes the raw channel for select loops; call Fired after receiving from it.
func (w Watch) C() <-chan zk.Event { return w.ch }

// Fired records a watch event received through C.
func (w Watch) Fired() { w.c.watchesFired.Add(1) }

// Get reads a znode.
func (c *Client) Get(ctx context.Context, p string) ([]byte, Stat, error) {
	if err := ctx.Err(); err != nil {
		return nil, Stat{}, err
	}
	c.reads.Add(1)
	data, st, err := c.conn.Get(p)
	return data, convStat(st), wrap("get", p, err)
}

// GetW reads a znode and watches it for data changes and deletion.
func (c *Client) GetW(ctx context.Context, p string) ([]byte, Stat, Watch, error) {
	if err := ctx.Err(); err != nil {
		return nil, Stat{}, Watch{}, err
	}
	c.reads.Add(1)
	c.watches.Add(1)
	data, st, ch, err := c.conn.GetW(p)
	return data, convStat(st), Watch{c: c, ch: ch}, wrap("get", p, err)
}

// ExistsW reports whether a znode exists and watches for its creation, change or deletion.
func (c *Client) ExistsW(ctx context.Context, p string) (bool, Stat, Watch, error) {
	if err := ctx.Err(); err != nil {
		return false, Stat{}, Watch{}, err
	}
	c.reads.Add(1)
	c.watches.Add(1)
	ok, st, ch, err := c.conn.ExistsW(p)
	return ok, convStat(st), Watch{c: c, ch: ch}, wrap("exists", p, err)
}

// Exists reports whether a znode exists.
func (c *Client) Exists(ctx context.Context, p string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c.reads.Add(1)
	ok, _, err := c.conn.Exists(p)
	return ok, wrap("exists", p, err)
}

// Children lists a znode's children.
func (c *Client) Children(ctx context.Context, p string) ([]string, Stat, error) {
	if err := ctx.Err(); err != nil {
		return nil, Stat{}, err
	}
	c.reads.Add(1)
	ch, st, err := c.conn.Children(p)
	return ch, convStat(st), wrap("children", p, err)
}

// ChildrenW lists a znode's children and watches the list.
func (c *Client) ChildrenW(ctx context.Context, p string) ([]string, Stat, Watch, error) {
	if err := ctx.Err(); err != nil {
		return nil, Stat{}, Watch{}, err
	}
	c.reads.Add(1)
	c.watches.Add(1)
	ch, st, w, err := c.conn.ChildrenW(p)
	return ch, convStat(st), Watch{c: c, ch: w}, wrap("children", p, err)
}

// Mode is a znode's lifetime and naming.
type Mode int32

const (
	Persistent           Mode = Mode(zk.FlagPersistent)
	Ephemeral            Mode = Mode(zk.FlagEphemeral)
	PersistentSequential Mode = Mode(zk.FlagSequence)
	EphemeralSequential  Mode = Mode(zk.FlagEphemeral | zk.FlagSequence)
)

// Create makes a znode and returns its actual path (sequential nodes get a counter).
func (c *Client) Create(ctx context.Context, p string, data []byte, mode Mode) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	c.writes.Add(1)
	out, err := c.conn.Create(p, data, int32(mode), c.acl)
	return out, wrap("create", p, err)
}

// Set writes a znode's data if its version matches (-1: any).
func (c *Client) Set(ctx context.Context, p string, data []byte, version int32) (Stat, error) {
	if err := ctx.Err(); err != nil {
		return Stat{}, err
	}
	c.writes.Add(1)
	st, err := c.conn.Set(p, data, version)
	return convStat(st), wrap("set", p, err)
}

// Delete removes a znode if its version matches (-1: any).
func (c *Client) Delete(ctx context.Context, p string, version int32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.writes.Add(1)
	return wrap("delete", p, c.conn.Delete(p, version))
}

// EnsurePath creates p and its missing parents as empty persistent znodes.
func (c *Client) EnsurePath(ctx context.Context, p string) error {
	// A read first: a create that fails because the znode exists still goes through the
	// leader's log, and waits for its disk like any write (about 20 ms each here, for every
	// component, on every call: a joining peer waited 0.1 s for the set it was about to read).
	if ok, err := c.Exists(ctx, p); err == nil && ok {
		return nil
	}
	cur := ""
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		cur = path.Join("/", cur, part)
		if _, err := c.Create(ctx, cur, nil, Persistent); err != nil && !errors.Is(err, ErrNodeExists) {
			return err
		}
	}
	return nil
}

// DeleteTree removes p and everything below it. Missing nodes are not an error.
func (c *Client) DeleteTree(ctx context.Context, p string) error {
	children, _, err := c.Children(ctx, p)
	if errors.Is(err, ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, ch := range children {
		if err := c.DeleteTree(ctx, path.Join(p, ch)); err != nil {
			return err
		}
	}
	if err := c.Delete(ctx, p, -1); err != nil && !errors.Is(err, ErrNoNode) {
		return err
	}
	return nil
}

// Op is one operation of a Multi transaction.
type Op struct{ req any }

// CreateOp creates a znode.
func CreateOp(p string, data []byte, mode Mode) Op {
	return Op{&zk.CreateRequest{Path: p, Data: data, Flags: int32(mode)}} // Multi sets the client's ACL
}

// SetOp writes data if the version matches.
func SetOp(p string, data []byte, version int32) Op {
	return Op{&zk.SetDataRequest{Path: p, Data: data, Version: version}}
}

// DeleteOp removes a znode if the version matches.
func DeleteOp(p string, version int32) Op {
	return Op{&zk.DeleteRequest{Path: p, Version: version}}
}

// CheckOp asserts a znode exists at a version (-1: any) without changing it.
func CheckOp(p string, version int32) Op {
	return Op{&zk.CheckVersionRequest{Path: p, Version: version}}
}

// aclFor is what the znodes rollkeeper creates carry. Without digest auth: open to all (the world
// ACL). With it: readable by anyone (the state is not secret, and zkCli shows it to an admin
// without the credentials) and changed only by rollkeeper's digest identity, so a client
// without the credentials cannot move a rollout. The id is spelled out rather than "auth",
// which expands to every identity of the session: over TLS that includes the client
// certificate's (x509:CN=...), which any holder of a certificate from the same CA may share.
func aclFor(auth string) []zk.ACL {
	if auth == "" {
		return zk.WorldACL(zk.PermAll)
	}
	return []zk.ACL{
		{Perms: zk.PermRead, Scheme: "world", ID: "anyone"},
		{Perms: zk.PermAll, Scheme: "digest", ID: DigestID(auth)},
	}
}

// Multi applies ops atomically: all or none.
func (c *Client) Multi(ctx context.Context, ops ...Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	reqs := make([]any, len(ops))
	paths := make([]string, len(ops))
	for i, op := range ops {
		reqs[i] = op.req
		switch r := op.req.(type) {
		case *zk.CreateRequest:
			paths[i] = r.Path
			r.Acl = c.acl
		case *zk.SetDataRequest:
			paths[i] = r.Path
		case *zk.DeleteRequest:
			paths[i] = r.Path
		case *zk.CheckVersionRequest:
			paths[i] = r.Path
		}
	}
	c.writes.Add(1)
	c.multiOps.Add(int64(len(ops)))
	res, err := c.conn.Multi(reqs...)
	for i, r := range res {
		if r.Error != nil && !errors.Is(r.Error, zk.ErrAPIError) && i < len(paths) {
			return wrap("multi", paths[i], r.Error)
		}
	}
	return wrap("multi", strings.Join(paths, ","), err)
}

func wrap(op, p string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("zookeeper %s %s: %w", op, p, translate(err))
}

// translate maps go-zookeeper errors to this package's sentinels (keeping the original text).
func translate(err error) error {
	var s error
	switch {
	case errors.Is(err, zk.ErrNoNode):
		s = ErrNoNode
	case errors.Is(err, zk.ErrNodeExists):
		s = ErrNodeExists
	case errors.Is(err, zk.ErrBadVersion):
		s = ErrBadVersion
	case errors.Is(err, zk.ErrNotEmpty):
		s = ErrNotEmpty
	case errors.Is(err, zk.ErrSessionExpired), errors.Is(err, zk.ErrSessionMoved):
		s = ErrSessionExpired
	case errors.Is(err, zk.ErrNoAuth):
		s = ErrNoAuth
	case errors.Is(err, zk.ErrClosing):
		s = ErrClosed
	case errors.Is(err, zk.ErrNoServer), errors.Is(err, zk.ErrConnectionClosed):
		// The library reconnects by itself; the caller retries after a pause.
		s = ErrUnavailable
	default:
		return err
	}
	return fmt.Errorf("%w (%v)", s, err)
}

type logAdapter struct{ l logr.Logger }

func (a logAdapter) Printf(format string, args ...any) {
	a.l.V(1).Info(fmt.Sprintf(format, args...), "component", "zookeeper")
}
