package zkmodel

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// The conformance suite: every operation runs on the model and on a real ZooKeeper server (one
// standalone server for the package, started by the first test that needs it), and the results
// must agree: errors (by sentinel, and the "zookeeper <op> <path>" they name), returned paths,
// data, the comparable Stat fields (Version, CVersion, NumChildren, DataLength, which session
// owns an ephemeral, and the order of every zxid seen: equal where the server's are equal,
// ordered as the server's are), sorted children, and which watches fired with which event. After
// each operation every session's fired watches are compared: an event the model queued must
// arrive on the real watch's channel (with a deadline), and a watch the model did not fire must
// be silent after a round trip on its session (ZooKeeper delivers a session's notifications
// before the replies to its later requests). A session ends by the client's Close (compared with
// Model.Close) or by expiry, brought about by cutting a client off through a TCP proxy until the
// server has expired it (compared with Model.Expire). Each test works under its own base znode,
// fresh on both sides, so sequential counters line up.

var (
	zkOnce sync.Once
	zkEns  *zkserver.Ensemble
	zkDir  string
	zkErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if zkEns != nil {
		zkEns.Stop()
	}
	if zkDir != "" {
		os.RemoveAll(zkDir)
	}
	os.Exit(code)
}

// server starts the package's ZooKeeper server on first use (the model-only tests and the fuzz
// target never wait for it) and returns its connect string.
func server(t *testing.T) string {
	t.Helper()
	zkOnce.Do(func() {
		if zkDir, zkErr = os.MkdirTemp("", "zkmodel-zk-"); zkErr == nil {
			zkEns, zkErr = zkserver.Start(context.Background(), zkDir, 1)
		}
	})
	if zkErr != nil {
		t.Fatal(zkErr)
	}
	return zkEns.Connect()
}

// eventWait bounds the wait for a watch event the model says has fired.
const eventWait = 10 * time.Second

// pairWatch is one W call's watch on both sides.
type pairWatch struct {
	id   WatchID
	w    zkclient.Watch
	what string
}

// slot is one client: a real session and its model twin.
type slot struct {
	name    string
	real    *zkclient.Client
	ms      SessionID
	closed  bool
	watches []pairWatch // outstanding
}

type zxPair struct{ real, model int64 }

// conf runs one script on both sides.
type conf struct {
	t      *testing.T
	ctx    context.Context
	m      *Model
	base   string
	slots  []*slot
	gen    int
	label  string // printed with every failure (the seed of a random run)
	log    []string
	zx     []zxPair       // sorted by real
	counts map[string]int // outcomes and events compared, for the log
	owners map[int64]string
	mOwner map[SessionID]string
}

func newConf(t *testing.T, sessions int) *conf {
	t.Helper()
	connect := server(t)
	c := &conf{t: t, ctx: context.Background(), m: New(), label: t.Name(), owners: map[int64]string{}, mOwner: map[SessionID]string{}, counts: map[string]int{}}
	t.Cleanup(func() {
		if !t.Failed() {
			t.Logf("%d ops agree: %v", len(c.log), c.counts)
		}
	})
	for i := 0; i < sessions; i++ {
		c.slots = append(c.slots, c.open(connect, i, 10*time.Second))
	}
	c.base = "/zkmodel/" + strings.NewReplacer("/", "_", "#", "_").Replace(t.Name())
	// The base exists on both sides, fresh: nothing else runs under it.
	s0 := c.slots[0]
	if err := s0.real.EnsurePath(c.ctx, c.base); err != nil {
		t.Fatal(err)
	}
	if _, err := s0.real.Create(c.ctx, c.base+"/fresh", nil, zkclient.Persistent); err != nil {
		t.Fatalf("base %s not fresh: %v", c.base, err)
	}
	if err := s0.real.Delete(c.ctx, c.base+"/fresh", -1); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/zkmodel", c.base} {
		if _, err := c.m.Create(s0.ms, p, nil, Persistent); err != nil {
			t.Fatal(err)
		}
	}
	// The probe above bumped the real base's cversion by two: do the same on the model.
	if _, err := c.m.Create(s0.ms, c.base+"/fresh", nil, Persistent); err != nil {
		t.Fatal(err)
	}
	if err := c.m.Delete(s0.ms, c.base+"/fresh", -1); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *conf) open(connect string, i int, timeout time.Duration) *slot {
	c.t.Helper()
	cl, err := zkclient.Dial(c.ctx, zkclient.Config{Servers: zkclient.ParseServers(connect), SessionTimeout: timeout})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	c.gen++
	s := &slot{name: fmt.Sprintf("s%d", i), real: cl, ms: c.m.NewSession()}
	label := fmt.Sprintf("%s#%d", s.name, c.gen)
	c.owners[cl.Session().ID] = label
	c.mOwner[s.ms] = label
	return s
}

// p is a path under the test's base.
func (c *conf) p(rel string) string { return c.base + rel }

func (c *conf) short(s string) string { return strings.ReplaceAll(s, c.base, "~") }

func (c *conf) logf(format string, args ...any) {
	c.log = append(c.log, c.short(fmt.Sprintf(format, args...)))
}

func (c *conf) fail(format string, args ...any) {
	c.t.Helper()
	tail := c.log
	if len(tail) > 80 {
		tail = tail[len(tail)-80:]
	}
	c.t.Fatalf("%s: model and ZooKeeper disagree after op %d: %s\nops (~ = %s):\n  %s", c.label, len(c.log),
		c.short(fmt.Sprintf(format, args...)), c.base, strings.Join(tail, "\n  "))
}

// errClass is the comparable identity of an error: the sentinel, whichever side produced it.
func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, zkclient.ErrNoNode):
		return "NoNode"
	case errors.Is(err, zkclient.ErrNodeExists):
		return "NodeExists"
	case errors.Is(err, zkclient.ErrBadVersion):
		return "BadVersion"
	case errors.Is(err, zkclient.ErrNotEmpty):
		return "NotEmpty"
	case errors.Is(err, zkclient.ErrSessionExpired):
		return "SessionExpired"
	case errors.Is(err, ErrBadArguments), errors.Is(err, zk.ErrInvalidPath), errors.Is(err, zk.ErrBadArguments),
		errors.Is(err, zk.ErrInvalidFlags), strings.Contains(err.Error(), "invalid flag value"): // go-zookeeper's unknown create mode (no sentinel)
		return "BadArguments"
	case errors.Is(err, ErrNoChildrenForEphemerals), errors.Is(err, zk.ErrNoChildrenForEphemerals):
		return "NoChildrenForEphemerals"
	}
	return "other(" + err.Error() + ")"
}

// errSubject is "zookeeper <op> <path>", what the error names.
func errSubject(err error) string {
	s, _, _ := strings.Cut(err.Error(), ": ")
	return s
}

// sameErr compares the two sides' errors; it reports whether both succeeded.
func (c *conf) sameErr(what string, real, model error) bool {
	c.t.Helper()
	c.counts[errClass(real)]++
	if rc, mc := errClass(real), errClass(model); rc != mc {
		c.fail("%s: ZooKeeper %s (%v), model %s (%v)", what, rc, real, mc, model)
	}
	if real != nil && errSubject(real) != errSubject(model) {
		c.fail("%s: ZooKeeper's error names %q, the model's %q", what, errSubject(real), errSubject(model))
	}
	return real == nil
}

// zxid records a pair of zxids and checks that the model orders every zxid seen so far as
// ZooKeeper does.
func (c *conf) zxid(what string, real, model int64) {
	c.t.Helper()
	i := sort.Search(len(c.zx), func(i int) bool { return c.zx[i].real >= real })
	if i < len(c.zx) && c.zx[i].real == real {
		if c.zx[i].model != model {
			c.fail("%s: zxid %#x was model %d before, now %d", what, real, c.zx[i].model, model)
		}
		return
	}
	if i > 0 && c.zx[i-1].model >= model {
		c.fail("%s: ZooKeeper's zxid %#x follows %#x, the model's %d does not follow %d", what, real, c.zx[i-1].real, model, c.zx[i-1].model)
	}
	if i < len(c.zx) && c.zx[i].model <= model {
		c.fail("%s: ZooKeeper's zxid %#x precedes %#x, the model's %d does not precede %d", what, real, c.zx[i].real, model, c.zx[i].model)
	}
	c.zx = slices.Insert(c.zx, i, zxPair{real, model})
}

func (c *conf) stat(what string, r zkclient.Stat, m Stat) {
	c.t.Helper()
	if r.Version != m.Version || r.CVersion != m.CVersion || r.NumChildren != m.NumChildren {
		c.fail("%s: ZooKeeper's stat version %d cversion %d children %d, the model's %d %d %d", what,
			r.Version, r.CVersion, r.NumChildren, m.Version, m.CVersion, m.NumChildren)
	}
	ro, mo := "", ""
	if r.EphemeralOwner != 0 {
		ro = c.owners[r.EphemeralOwner]
		if ro == "" {
			ro = fmt.Sprintf("unknown %#x", r.EphemeralOwner)
		}
	}
	if m.EphemeralOwner != 0 {
		mo = c.mOwner[m.EphemeralOwner]
		if mo == "" {
			mo = fmt.Sprintf("unknown %d", m.EphemeralOwner)
		}
	}
	if ro != mo {
		c.fail("%s: ephemeral owner %q on ZooKeeper, %q on the model", what, ro, mo)
	}
	c.zxid(what+" czxid", r.Czxid, m.Czxid)
	c.zxid(what+" mzxid", r.Mzxid, m.Mzxid)
	c.zxid(what+" pzxid", r.Pzxid, m.Pzxid)
}

func (c *conf) watch(s *slot, what string, id WatchID, w zkclient.Watch) {
	if id == 0 {
		c.fail("%s: ZooKeeper set a watch, the model did not", what)
	}
	s.watches = append(s.watches, pairWatch{id: id, w: w, what: c.short(what)})
}

func modelEvent(t zk.EventType) EventType {
	switch t {
	case zk.EventNodeCreated:
		return NodeCreated
	case zk.EventNodeDeleted:
		return NodeDeleted
	case zk.EventNodeDataChanged:
		return NodeDataChanged
	case zk.EventNodeChildrenChanged:
		return NodeChildrenChanged
	case zk.EventNotWatching:
		return SessionExpired
	}
	return EventType(-int(t))
}

// settle compares the watch events of the last operation, session by session: every event the
// model queued (in its order) must arrive on that watch's channel; every other watch must not
// have fired once a round trip on its session came back.
func (c *conf) settle() {
	c.t.Helper()
	for _, s := range c.slots {
		for {
			ev, ok := c.m.Deliver(s.ms)
			if !ok {
				break
			}
			i := slices.IndexFunc(s.watches, func(w pairWatch) bool { return w.id == ev.Watch })
			if i < 0 {
				c.fail("%s: the model fired watch %d (%v %s), which is not outstanding", s.name, ev.Watch, ev.Type, ev.Path)
			}
			pw := s.watches[i]
			c.counts["event "+ev.Type.String()]++
			s.watches = slices.Delete(s.watches, i, i+1)
			timer := time.NewTimer(eventWait)
			select {
			case got := <-pw.w.C():
				timer.Stop()
				pw.w.Fired()
				if modelEvent(got.Type) != ev.Type || got.Path != ev.Path {
					c.fail("%s %s: ZooKeeper fired %v %s, the model %v %s", s.name, pw.what, got.Type, got.Path, ev.Type, ev.Path)
				}
			case <-timer.C:
				c.fail("%s %s: the model fired %v %s, ZooKeeper nothing in %s", s.name, pw.what, ev.Type, ev.Path, eventWait)
			}
		}
		if s.closed {
			continue
		}
		if _, err := s.real.Exists(c.ctx, "/"); err != nil { // the round trip
			c.t.Fatal(err)
		}
		for _, pw := range s.watches {
			select {
			case got := <-pw.w.C():
				c.fail("%s %s: ZooKeeper fired %v %s, the model nothing", s.name, pw.what, got.Type, got.Path)
			default:
			}
		}
	}
}

// The operations, each on both sides, compared, then settled.

func (c *conf) get(s *slot, p string) {
	c.t.Helper()
	rd, rs, rerr := s.real.Get(c.ctx, p)
	md, ms, merr := c.m.Get(s.ms, p)
	c.logf("%s get %s → %q %v", s.name, p, md, merr)
	c.data("get "+p, rd, rs, rerr, md, ms, merr)
	c.settle()
}

func (c *conf) getW(s *slot, p string) {
	c.t.Helper()
	rd, rs, w, rerr := s.real.GetW(c.ctx, p)
	md, ms, id, merr := c.m.GetW(s.ms, p)
	c.logf("%s getW %s → %q w%d %v", s.name, p, md, id, merr)
	if c.data("getW "+p, rd, rs, rerr, md, ms, merr) {
		c.watch(s, "GetW "+p, id, w)
	}
	c.settle()
}

func (c *conf) data(what string, rd []byte, rs zkclient.Stat, rerr error, md []byte, ms Stat, merr error) bool {
	c.t.Helper()
	if !c.sameErr(what, rerr, merr) {
		return false
	}
	if !bytes.Equal(rd, md) {
		c.fail("%s: ZooKeeper's data %q, the model's %q", what, rd, md)
	}
	if int(ms.DataLength) != len(rd) {
		c.fail("%s: ZooKeeper's data is %d bytes, the model's DataLength %d", what, len(rd), ms.DataLength)
	}
	c.stat(what, rs, ms)
	return true
}

func (c *conf) exists(s *slot, p string) {
	c.t.Helper()
	rok, rerr := s.real.Exists(c.ctx, p)
	mok, _, merr := c.m.Exists(s.ms, p)
	c.logf("%s exists %s → %v %v", s.name, p, mok, merr)
	if c.sameErr("exists "+p, rerr, merr) && rok != mok {
		c.fail("exists %s: ZooKeeper %v, the model %v", p, rok, mok)
	}
	c.settle()
}

func (c *conf) existsW(s *slot, p string) {
	c.t.Helper()
	rok, rs, w, rerr := s.real.ExistsW(c.ctx, p)
	mok, ms, id, merr := c.m.ExistsW(s.ms, p)
	c.logf("%s existsW %s → %v w%d %v", s.name, p, mok, id, merr)
	if c.sameErr("existsW "+p, rerr, merr) {
		if rok != mok {
			c.fail("existsW %s: ZooKeeper %v, the model %v", p, rok, mok)
		}
		if rok {
			c.stat("existsW "+p, rs, ms)
		}
		c.watch(s, "ExistsW "+p, id, w)
	}
	c.settle()
}

func (c *conf) children(s *slot, p string) {
	c.t.Helper()
	rc, rs, rerr := s.real.Children(c.ctx, p)
	mc, ms, merr := c.m.Children(s.ms, p)
	c.logf("%s children %s → %v %v", s.name, p, mc, merr)
	c.kids("children "+p, rc, rs, rerr, mc, ms, merr)
	c.settle()
}

func (c *conf) childrenW(s *slot, p string) {
	c.t.Helper()
	rc, rs, w, rerr := s.real.ChildrenW(c.ctx, p)
	mc, ms, id, merr := c.m.ChildrenW(s.ms, p)
	c.logf("%s childrenW %s → %v w%d %v", s.name, p, mc, id, merr)
	if c.kids("childrenW "+p, rc, rs, rerr, mc, ms, merr) {
		c.watch(s, "ChildrenW "+p, id, w)
	}
	c.settle()
}

func (c *conf) kids(what string, rc []string, rs zkclient.Stat, rerr error, mc []string, ms Stat, merr error) bool {
	c.t.Helper()
	if !c.sameErr(what, rerr, merr) {
		return false
	}
	if !sort.StringsAreSorted(mc) {
		c.fail("%s: the model's children %v are not sorted", what, mc)
	}
	rc = slices.Clone(rc)
	sort.Strings(rc)
	if !slices.Equal(rc, mc) && !(len(rc) == 0 && len(mc) == 0) {
		c.fail("%s: ZooKeeper's children %v, the model's %v", what, rc, mc)
	}
	c.stat(what, rs, ms)
	return true
}

// create returns the created path ("" on an error, which both sides agreed on).
func (c *conf) create(s *slot, p string, data []byte, mode Mode) string {
	c.t.Helper()
	rp, rerr := s.real.Create(c.ctx, p, data, zkclient.Mode(mode))
	mp, merr := c.m.Create(s.ms, p, data, mode)
	c.logf("%s create %s %q %s → %s %v", s.name, p, data, modeName(mode), mp, merr)
	if c.sameErr("create "+p, rerr, merr) && rp != mp {
		c.fail("create %s: ZooKeeper made %s, the model %s", p, rp, mp)
	}
	c.settle()
	return mp
}

func modeName(m Mode) string {
	switch m {
	case Persistent:
		return "persistent"
	case Ephemeral:
		return "ephemeral"
	case PersistentSequential:
		return "persistent-seq"
	case EphemeralSequential:
		return "ephemeral-seq"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

func (c *conf) set(s *slot, p string, data []byte, version int32) {
	c.t.Helper()
	rs, rerr := s.real.Set(c.ctx, p, data, version)
	ms, merr := c.m.Set(s.ms, p, data, version)
	c.logf("%s set %s %q v%d → %v", s.name, p, data, version, merr)
	if c.sameErr(fmt.Sprintf("set %s v%d", p, version), rerr, merr) {
		c.stat("set "+p, rs, ms)
	}
	c.settle()
}

func (c *conf) del(s *slot, p string, version int32) {
	c.t.Helper()
	rerr := s.real.Delete(c.ctx, p, version)
	merr := c.m.Delete(s.ms, p, version)
	c.logf("%s delete %s v%d → %v", s.name, p, version, merr)
	c.sameErr(fmt.Sprintf("delete %s v%d", p, version), rerr, merr)
	c.settle()
}

// mop is one multi op, for both sides.
type mop struct {
	kind    opKind
	path    string
	data    []byte
	mode    Mode
	version int32
}

func (o mop) String() string {
	switch o.kind {
	case opCreate:
		return fmt.Sprintf("create %s %q %s", o.path, o.data, modeName(o.mode))
	case opSet:
		return fmt.Sprintf("set %s %q v%d", o.path, o.data, o.version)
	case opDelete:
		return fmt.Sprintf("delete %s v%d", o.path, o.version)
	}
	return fmt.Sprintf("check %s v%d", o.path, o.version)
}

func (c *conf) multi(s *slot, ops ...mop) {
	c.t.Helper()
	var rops []zkclient.Op
	var mops []Op
	var desc []string
	for _, o := range ops {
		switch o.kind {
		case opCreate:
			rops, mops = append(rops, zkclient.CreateOp(o.path, o.data, zkclient.Mode(o.mode))), append(mops, CreateOp(o.path, o.data, o.mode))
		case opSet:
			rops, mops = append(rops, zkclient.SetOp(o.path, o.data, o.version)), append(mops, SetOp(o.path, o.data, o.version))
		case opDelete:
			rops, mops = append(rops, zkclient.DeleteOp(o.path, o.version)), append(mops, DeleteOp(o.path, o.version))
		default:
			rops, mops = append(rops, zkclient.CheckOp(o.path, o.version)), append(mops, CheckOp(o.path, o.version))
		}
		desc = append(desc, o.String())
	}
	rerr := s.real.Multi(c.ctx, rops...)
	merr := c.m.Multi(s.ms, mops...)
	c.logf("%s multi [%s] → %v", s.name, strings.Join(desc, "; "), merr)
	c.sameErr("multi", rerr, merr)
	c.settle()
}

// close ends slot i's session on both sides (Close: its ephemerals go at once, firing its own
// watches too), compares the events, checks the session is unusable, and opens a new one in the slot.
func (c *conf) close(i int) {
	c.t.Helper()
	s := c.slots[i]
	s.real.Close()
	c.m.Close(s.ms)
	s.closed = true
	c.logf("%s close", s.name)
	c.settle()
	if len(s.watches) != 0 {
		c.fail("%s closed, %d watches not ended by the model", s.name, len(s.watches))
	}
	if _, _, err := s.real.Get(c.ctx, "/"); err == nil {
		c.fail("%s: a closed ZooKeeper client still answers", s.name)
	}
	if _, _, err := c.m.Get(s.ms, "/"); !errors.Is(err, zkclient.ErrSessionExpired) {
		c.fail("%s: an expired model session still answers: %v", s.name, err)
	}
	c.slots[i] = c.open(server(c.t), i, 10*time.Second)
}

// expire lets slot i's session expire on the server (its client, connected through px, is cut
// off until the server has removed one of its ephemerals), compares the events (its own
// watches end with SessionExpired, NodeDeleted cannot reach it), and opens a new session in
// the slot.
func (c *conf) expire(i int, px *proxy) {
	c.t.Helper()
	s := c.slots[i]
	eph := sortedKeys(c.m.sessions[s.ms].ephemerals)
	if len(eph) == 0 {
		c.t.Fatal("expire needs a session with an ephemeral znode, to see it expire")
	}
	probe, err := zkclient.Dial(c.ctx, zkclient.Config{Servers: zkclient.ParseServers(server(c.t)), SessionTimeout: 10 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	defer probe.Close()
	ok, _, gone, err := probe.ExistsW(c.ctx, eph[0])
	if err != nil || !ok {
		c.fail("%s's ephemeral %s: %v %v", s.name, eph[0], ok, err)
	}
	px.cut()
	select {
	case <-gone.C():
	case <-time.After(30 * time.Second):
		c.t.Fatalf("%s did not expire in 30 s", s.name)
	}
	c.m.Expire(s.ms)
	s.closed = true
	c.logf("%s expired", s.name)
	px.restore() // the client reconnects, learns of the expiry, and ends its watches
	c.settle()
	if len(s.watches) != 0 {
		c.fail("%s expired, %d watches not ended by the model", s.name, len(s.watches))
	}
	s.real.Close()
	c.slots[i] = c.open(server(c.t), i, 10*time.Second)
}

// proxy forwards TCP connections to ZooKeeper until cut: then it drops them and every new one.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); px.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go px.serve(in)
		}
	}()
	return px
}

func (px *proxy) serve(in net.Conn) {
	out, err := net.Dial("tcp", px.target)
	px.mu.Lock()
	if err != nil || px.down {
		px.mu.Unlock()
		in.Close()
		if out != nil {
			out.Close()
		}
		return
	}
	px.conns = append(px.conns, in, out)
	px.mu.Unlock()
	go func() { io.Copy(out, in); out.Close() }()
	io.Copy(in, out)
	in.Close()
}

func (px *proxy) cut() {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.down = true
	for _, c := range px.conns {
		c.Close()
	}
	px.conns = nil
}

func (px *proxy) restore() {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.down = false
}

// The hand-written scripts, one per rule.

func TestConformanceCreateGetSet(t *testing.T) {
	c := newConf(t, 2)
	a, b := c.slots[0], c.slots[1]
	c.get(a, c.base)
	c.create(a, c.p("/n"), []byte("one"), Persistent)
	c.get(b, c.p("/n"))
	c.exists(b, c.p("/n"))
	c.existsW(b, c.p("/n"))
	c.set(a, c.p("/n"), []byte("two"), 0)
	c.set(a, c.p("/n"), []byte("three"), 0) // BadVersion
	c.set(a, c.p("/n"), nil, 1)
	c.set(a, c.p("/n"), []byte("x"), -1)
	c.get(b, c.p("/n"))
	c.set(a, c.p("/missing"), nil, -1)
	c.del(a, c.p("/n"), 1)
	c.del(a, c.p("/n"), 3)
	c.del(a, c.p("/n"), 3)
	c.get(b, c.p("/n"))
	c.exists(b, c.p("/n"))
	c.children(b, c.base)
	c.children(b, c.p("/n"))
	c.create(a, c.p("/n"), nil, Persistent)
	c.create(a, c.p("/n"), nil, Persistent) // NodeExists
	c.create(b, c.p("/n/e"), []byte("eph"), Ephemeral)
	c.get(a, c.p("/n/e"))
	c.children(a, c.p("/n"))
}

func TestConformanceSequential(t *testing.T) {
	c := newConf(t, 2)
	a, b := c.slots[0], c.slots[1]
	c.create(a, c.p("/q"), nil, Persistent)
	c.create(a, c.p("/q/n-"), nil, PersistentSequential)
	x := c.create(b, c.p("/q/n-"), []byte("e"), EphemeralSequential)
	c.create(a, c.p("/q/other"), nil, Persistent)
	c.del(b, x, -1)
	c.del(a, c.p("/q/other"), -1)
	c.create(a, c.p("/q/n-"), nil, PersistentSequential)
	c.create(a, c.p("/q/"), nil, PersistentSequential) // trailing slash: the counter is the name
	c.create(a, c.p("/q/n-"), nil, EphemeralSequential)
	c.create(a, c.p("/q/missing/n-"), nil, PersistentSequential)
	c.children(b, c.p("/q"))
	c.get(b, c.p("/q"))
	c.close(0)
	c.children(b, c.p("/q"))
	c.create(b, c.p("/q/n-"), nil, PersistentSequential)
	c.children(b, c.p("/q"))
}

func TestConformanceVersionsAndErrors(t *testing.T) {
	c := newConf(t, 2)
	a, b := c.slots[0], c.slots[1]
	c.create(a, c.p("/v"), nil, Persistent)
	for i := int32(0); i < 3; i++ {
		c.set(a, c.p("/v"), []byte{byte('a' + i)}, i)
	}
	c.set(a, c.p("/v"), nil, 7)
	c.del(a, c.p("/v"), 2)
	c.create(a, c.p("/v/c"), nil, Persistent)
	c.del(a, c.p("/v"), 3)  // version is right, but children: NotEmpty
	c.del(a, c.p("/v"), 99) // BadVersion comes before NotEmpty
	c.create(a, c.p("/x/y"), nil, Persistent)
	c.create(b, c.p("/e"), nil, Ephemeral)
	c.create(a, c.p("/e/c"), nil, Persistent)
	c.create(a, c.p("/e/c-"), nil, EphemeralSequential)
	c.create(a, c.p("/e"), nil, Ephemeral) // NodeExists
	c.del(a, c.p("/v/c"), 0)
	c.del(a, c.p("/v"), 3)
	c.get(a, c.p("/v"))
}

func TestConformanceMulti(t *testing.T) {
	c := newConf(t, 2)
	a, b := c.slots[0], c.slots[1]
	c.create(a, c.p("/m"), []byte("0"), Persistent)
	c.childrenW(b, c.base)
	c.getW(b, c.p("/m"))
	c.existsW(b, c.p("/n"))
	// A failing middle op leaves nothing, fires nothing, and is the one the error names.
	c.multi(a, mop{kind: opCreate, path: c.p("/n")}, mop{kind: opSet, path: c.p("/m"), version: 5}, mop{kind: opCreate, path: c.p("/o")})
	c.multi(a, mop{kind: opCreate, path: c.p("/n")}, mop{kind: opCreate, path: c.p("/n")})
	c.multi(a, mop{kind: opCheck, path: c.p("/m"), version: 0}, mop{kind: opDelete, path: c.p("/nothing"), version: -1})
	c.exists(a, c.p("/n"))
	c.exists(a, c.p("/o"))
	c.get(a, c.p("/m"))
	c.get(a, c.base)
	// One transaction: the creates share a czxid, sequential names count up inside it, later ops
	// see earlier ones.
	c.multi(a,
		mop{kind: opCreate, path: c.p("/n"), data: []byte("n")},
		mop{kind: opCreate, path: c.p("/n/s-"), mode: PersistentSequential},
		mop{kind: opCreate, path: c.p("/n/s-"), mode: EphemeralSequential},
		mop{kind: opDelete, path: c.p("/n/s-0000000000"), version: 0},
		mop{kind: opSet, path: c.p("/m"), data: []byte("1"), version: 0},
		mop{kind: opSet, path: c.p("/m"), data: []byte("2"), version: 1},
		mop{kind: opCheck, path: c.p("/m"), version: 2},
		mop{kind: opCreate, path: c.p("/o")},
		mop{kind: opDelete, path: c.p("/o"), version: -1},
		mop{kind: opCreate, path: c.p("/o"), data: []byte("again")})
	c.get(b, c.p("/n"))
	c.get(b, c.p("/n/s-0000000001"))
	c.get(b, c.p("/m"))
	c.get(b, c.p("/o"))
	c.children(b, c.p("/n"))
	c.children(b, c.base)
	// Errors inside a multi, which only the server checks.
	c.multi(a, mop{kind: opCreate, path: c.p("/e"), mode: Ephemeral}, mop{kind: opCreate, path: c.p("/e/c")})
	c.multi(a, mop{kind: opCreate, path: "relative"})
	c.multi(a, mop{kind: opDelete, path: c.p("/m/"), version: -1})
	c.multi(a, mop{kind: opSet, path: c.p("/m/"), version: -1})
	c.multi(a, mop{kind: opCheck, path: c.p("//m"), version: -1})
	c.multi(a, mop{kind: opDelete, path: c.p("/n"), version: -1})
	c.multi(a, mop{kind: opDelete, path: "/", version: -1})
}

func TestConformanceWatches(t *testing.T) {
	c := newConf(t, 3)
	a, b, d := c.slots[0], c.slots[1], c.slots[2]
	c.create(a, c.p("/w"), nil, Persistent)
	// Fan-out: three W calls on one path in one session all fire.
	c.getW(b, c.p("/w"))
	c.getW(b, c.p("/w"))
	c.existsW(b, c.p("/w"))
	c.childrenW(b, c.p("/w"))
	c.getW(d, c.p("/w"))
	c.set(a, c.p("/w"), []byte("1"), -1) // data watches fire, the child watch does not
	c.set(a, c.p("/w"), []byte("2"), -1) // one-shot: nothing
	c.create(a, c.p("/w/c"), nil, Persistent)
	c.create(a, c.p("/w/d"), nil, Persistent) // one-shot: nothing
	// A session's own change fires its own watches.
	c.getW(a, c.p("/w/c"))
	c.childrenW(a, c.p("/w"))
	c.set(a, c.p("/w/c"), nil, -1)
	c.del(a, c.p("/w/d"), -1)
	// ExistsW on a missing node watches its creation, then it is a data watch.
	c.existsW(b, c.p("/later"))
	c.existsW(d, c.p("/later"))
	c.existsW(d, c.p("/later/deeper")) // parent missing: still a watch
	c.getW(b, c.p("/later"))           // NoNode: no watch
	c.childrenW(b, c.p("/later"))      // NoNode: no watch
	c.create(a, c.p("/later"), nil, Persistent)
	c.existsW(b, c.p("/later"))
	c.del(a, c.p("/later"), -1)
	// Deletion fires the node's data and child watches and its parent's child watch.
	c.getW(b, c.p("/w/c"))
	c.childrenW(b, c.p("/w/c"))
	c.existsW(d, c.p("/w/c"))
	c.childrenW(d, c.p("/w"))
	c.del(a, c.p("/w/c"), -1)
	// Data watch not fired by children, child watch not fired by data.
	c.getW(b, c.p("/w"))
	c.childrenW(d, c.p("/w"))
	c.create(a, c.p("/w/e"), nil, Ephemeral)
	c.set(a, c.p("/w"), []byte("3"), -1)
	c.del(a, c.p("/w/e"), -1)
	c.get(b, c.p("/w"))
}

func TestConformanceSessionClose(t *testing.T) {
	c := newConf(t, 3)
	a, b, d := c.slots[0], c.slots[1], c.slots[2]
	c.create(a, c.p("/d"), nil, Persistent)
	c.create(a, c.p("/e1"), []byte("1"), Ephemeral)
	c.create(a, c.p("/d/e2"), nil, EphemeralSequential)
	c.create(a, c.p("/d/e3"), nil, Ephemeral)
	c.create(b, c.p("/d/e4"), nil, Ephemeral)
	c.get(d, c.p("/e1"))
	c.getW(b, c.p("/e1"))
	c.childrenW(b, c.p("/d"))
	c.existsW(d, c.p("/d/e20000000000"))
	c.childrenW(d, c.p("/d/e3"))
	c.childrenW(d, c.base)
	c.getW(d, c.p("/d/e4"))
	// The closing session's own watches end (EventNotWatching / SessionExpired).
	c.getW(a, c.p("/d"))
	c.existsW(a, c.p("/none"))
	// ... but a watch on its own ephemeral (or on a parent of one) fires first: on Close the
	// ephemerals go while the connection is still up.
	c.getW(a, c.p("/e1"))
	c.childrenW(a, c.p("/d"))
	c.close(0)
	c.children(b, c.p("/d"))
	c.exists(b, c.p("/e1"))
	c.get(d, c.p("/d/e4"))
	a = c.slots[0]
	c.create(a, c.p("/e1"), nil, Ephemeral)
	c.get(b, c.p("/e1"))
	c.close(1) // no watches anywhere this time but the base's
	c.children(d, c.p("/d"))
}

// TestConformanceSessionExpiry: a session cut off from the server expires there; its
// ephemerals go, the other sessions' watches fire, and its own watches end with
// SessionExpired once it reconnects (none of them fires NodeDeleted: it was not connected).
func TestConformanceSessionExpiry(t *testing.T) {
	c := newConf(t, 2)
	px := newProxy(t, server(t))
	// A short session (the server's minimum is 1 s), long enough not to expire by accident on
	// a loaded machine.
	c.slots = append(c.slots, c.open(px.ln.Addr().String(), 2, 2*time.Second))
	a, b, x := c.slots[0], c.slots[1], c.slots[2]
	c.create(x, c.p("/d"), nil, Persistent)
	c.create(x, c.p("/d/e"), []byte("e"), Ephemeral)
	c.create(x, c.p("/f"), nil, EphemeralSequential)
	c.getW(x, c.p("/d/e"))
	c.childrenW(x, c.p("/d"))
	c.existsW(x, c.p("/none"))
	c.getW(x, c.p("/d"))
	c.getW(a, c.p("/d/e"))
	c.childrenW(b, c.p("/d"))
	c.existsW(b, c.p("/f0000000001"))
	c.childrenW(a, c.base)
	c.expire(2, px)
	c.children(a, c.p("/d"))
	c.children(a, c.base)
	c.create(c.slots[2], c.p("/d/e"), nil, Ephemeral)
	c.get(b, c.p("/d/e"))
}

func TestConformanceBadPaths(t *testing.T) {
	c := newConf(t, 1)
	a := c.slots[0]
	c.create(a, c.p("/a"), nil, Persistent)
	bad := []string{"", "a", "a/b", c.p("/a/"), c.p("//a"), c.p("/a//b"), c.p("/a/."), c.p("/a/.."), c.p("/./a"), c.p("/../a"),
		c.p("/a\x00b"), c.p("/a\x01"), c.p("/a\x7f"), c.p("/\xff"), c.p("/\uf000"), c.p("/\ufff0")}
	for _, p := range bad {
		c.get(a, p)
		c.exists(a, p)
		c.children(a, p)
		c.create(a, p, nil, Persistent)
		c.set(a, p, nil, -1)
		c.del(a, p, -1)
	}
	// Well-formed for the client, refused by the server on writes only.
	for _, p := range []string{c.p("/\U0001F600"), c.p("/\ue000"), c.p("/\uffff")} {
		c.get(a, p)
		c.existsW(a, p)
		c.create(a, p, nil, Persistent)
		c.set(a, p, nil, -1)
		c.del(a, p, -1)
	}
	// Odd but fine.
	for _, p := range []string{c.p("/a."), c.p("/.a"), c.p("/a/..b"), c.p("/..."), c.p("/é")} {
		c.create(a, p, nil, Persistent)
		c.get(a, p)
	}
	c.del(a, "/", -1)
	c.create(a, "/", nil, Persistent)
	c.exists(a, "/") // not get: the real root also holds /zookeeper, which the model leaves out
	c.create(a, c.p("/a/x"), nil, Mode(9))
}

// TestConformanceRandom: seeded random operations over a small path alphabet from three
// sessions; a mismatch prints the seed and the ops (rerun one with -run
// 'TestConformanceRandom/seed=N$'). -zkmodel.seeds and -zkmodel.ops run more.
var (
	randomSeeds = flag.Int("zkmodel.seeds", 30, "seeds of TestConformanceRandom")
	randomOps   = flag.Int("zkmodel.ops", 60, "operations per seed of TestConformanceRandom")
)

func TestConformanceRandom(t *testing.T) {
	seeds, ops := int64(*randomSeeds), *randomOps
	for seed := int64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			c := newConf(t, 3)
			c.label = fmt.Sprintf("seed %d", seed)
			runRandom(c, rand.New(rand.NewSource(seed)), ops)
		})
	}
}

func runRandom(c *conf, r *rand.Rand, n int) {
	c.t.Helper()
	alphabet := []string{"", "/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z"}
	seqBases := []string{"/s-", "/a/s-", "/b/"}
	var made []string // sequential nodes made, so later ops can hit them
	path := func() string {
		switch r.Intn(5) {
		case 0:
			if len(made) > 0 {
				return made[r.Intn(len(made))]
			}
		case 1, 2:
			// A znode that exists now (per the model, which is deterministic: the seed replays).
			var live []string
			for _, p := range sortedKeys(c.m.nodes) {
				if strings.HasPrefix(p, c.base+"/") {
					live = append(live, p)
				}
			}
			if len(live) > 0 {
				return live[r.Intn(len(live))]
			}
		}
		return c.p(alphabet[r.Intn(len(alphabet))])
	}
	data := func() []byte { return []byte(strings.Repeat("d", r.Intn(3))) }
	version := func() int32 { // -1 half the time, so more writes go through
		if r.Intn(2) == 0 {
			return -1
		}
		return int32(r.Intn(3))
	}
	mode := func() Mode { return Mode(r.Intn(4)) }
	create := func() (string, Mode) {
		m := mode()
		if m.sequential() {
			// Not the base itself: that would name a sibling of the base, counted by a parent
			// shared with the other tests.
			if p := path(); r.Intn(2) == 0 && p != c.base {
				return p, m
			}
			return c.p(seqBases[r.Intn(len(seqBases))]), m
		}
		return path(), m
	}
	for _, p := range []string{"/a", "/b", "/a/x", "/b/x"} { // a tree to start from
		c.create(c.slots[0], c.p(p), nil, Persistent)
	}
	for i := 0; i < n; i++ {
		s := c.slots[r.Intn(len(c.slots))]
		switch k := r.Intn(100); {
		case k < 22:
			p, m := create()
			if out := c.create(s, p, data(), m); out != "" && m.sequential() {
				made = append(made, out)
			}
		case k < 34:
			c.set(s, path(), data(), version())
		case k < 42:
			if p := path(); p != c.base {
				c.del(s, p, version())
			}
		case k < 46:
			c.get(s, path())
		case k < 56:
			c.getW(s, path())
		case k < 58:
			c.exists(s, path())
		case k < 68:
			c.existsW(s, path())
		case k < 71:
			c.children(s, path())
		case k < 83:
			c.childrenW(s, path())
		case k < 97:
			var mops []mop
			for j := 0; j < 2+r.Intn(2); j++ {
				switch r.Intn(4) {
				case 0:
					p, m := create()
					mops = append(mops, mop{kind: opCreate, path: p, data: data(), mode: m})
				case 1:
					mops = append(mops, mop{kind: opSet, path: path(), data: data(), version: version()})
				case 2:
					if p := path(); p != c.base {
						mops = append(mops, mop{kind: opDelete, path: p, version: version()})
					}
				default:
					mops = append(mops, mop{kind: opCheck, path: path(), version: version()})
				}
			}
			c.multi(s, mops...)
		default:
			c.close(r.Intn(len(c.slots)))
		}
	}
	// Finally the whole tree under the base, from a fresh look.
	s := c.slots[0]
	var walk func(p string)
	walk = func(p string) {
		c.get(s, p)
		kids, _, err := c.m.Children(s.ms, p)
		if err != nil {
			return
		}
		c.children(s, p)
		for _, k := range kids {
			walk(p + "/" + k)
		}
	}
	walk(c.base)
}
