// Package zkmodel is a deterministic in-memory model of the ZooKeeper semantics rollkeeper relies
// on, as a client of a 3.8 server through go-zookeeper (internal/zkclient) sees them. It is the
// ground for a deterministic simulation: single-threaded, no goroutines, no clock, no randomness,
// every map walked in sorted order, and no input makes it panic (bad input is an error).
//
// What it models:
//
//   - the znode tree: persistent, ephemeral and sequential znodes, data, Stat (czxid, mzxid,
//     pzxid from one zxid counter advanced once per transaction, a multi being one; version;
//     cversion, bumped by every child create and delete; numChildren; dataLength; the
//     ephemeral owner);
//   - sequential names: the number of children the parent ever had created, %010d (the server's
//     internal cversion, which deletes do not advance; see below);
//   - the checks and their order as the server makes them: path validation (go-zookeeper's
//     client-side rules for every call, the server's stricter ones for what it validates: a
//     create's final path, set and check paths, delete's "/"), missing parent, existing node,
//     children of ephemerals, versions (-1 = any), deleting a node with children;
//   - multi: all or nothing, ops seeing the earlier ops' effects, the error naming the first
//     failing op as zkclient.Multi does;
//   - one-shot watches as a go-zookeeper client sees them: a data watch (GetW, ExistsW on an
//     existing node) fires NodeDataChanged on set and NodeDeleted on delete; ExistsW on a missing
//     node fires NodeCreated; a child watch (ChildrenW) fires NodeChildrenChanged on a child's
//     create or delete and NodeDeleted when the node goes. The server keeps one watch per
//     (session, path, kind) and go-zookeeper fans its one event out to every caller, so here
//     every W call is its own WatchID and all of them fire;
//   - watch events are queued per session in the order the client receives them (Pending,
//     Deliver): the caller decides when a client gets to see them. ZooKeeper guarantees that a
//     client sees a watch event before the result of any call it makes after the change; a
//     scheduler that keeps that guarantee delivers Pending(s) events before s's next call.
//     Within one transaction a session's events are in go-zookeeper's order (exist, data,
//     child watchers, each in registration order);
//   - the end of a session, by expiry (Expire) or by the client's Close (Close): its ephemerals
//     deleted in one transaction (firing the other sessions' watches, and on Close its own too,
//     its connection being still up), its outstanding watches each ended with SessionExpired,
//     and its later calls failing with zkclient.ErrSessionExpired.
//
// What it leaves out: ACLs and authentication; connection loss without expiry (a client that
// reconnects within its session timeout keeps its watches, which the model expresses by simply
// not expiring); quotas, the 1 MB request limit, TTL and container znodes; the /zookeeper system
// subtree (Children("/") is empty here); mtime/ctime; server-side watch deduplication other than
// through its visible effect, the fan-out; zxids burned by failed writes (only their order is
// meaningful, and that is unaffected).
//
// conformance_test.go keeps the model honest: it runs the same scripts and seeded random
// operation sequences against the model and a real ZooKeeper server (started by the package's
// tests) and compares errors, names, data, Stat fields, the order of zxids and the watch events
// each session receives, operation by operation. (The order of the events one operation fires
// on different watches of one session is not observable through go-zookeeper's separate
// channels; the suite compares those as a set, and the order across operations.)
//
// Real-server behaviour worth knowing (all checked by the conformance suite):
//
//   - a sequential suffix is not the parent's reported cversion: the server stores a count of
//     child creates only, names sequential children by it, and reports cversion as
//     2*creates - numChildren (creates + deletes). After creating a-0000000000 and b, then
//     deleting both, the parent's Stat says CVersion 4 but the next sequential child is
//     c-0000000002;
//   - a path go-zookeeper accepts but the server refuses (a character outside the Basic
//     Multilingual Plane, U+E000, U+FFFF) is ErrNoNode for reads and deletes but
//     ErrBadArguments for create, set and check: the server validates those paths only;
//   - a multi's ops are not validated by go-zookeeper, only by the server: a create of "a" in a
//     multi is ErrBadArguments and a delete of "/a/" (trailing slash) is ErrNoNode;
//   - a sequential create of "/a/" makes a child of /a named by the counter alone
//     ("/a/0000000003"); the trailing slash is allowed only for sequential creates;
//   - deleting "/" is ErrBadArguments (not ErrNotEmpty): the server refuses to delete its
//     special paths;
//   - on Client.Close the ephemerals go while the connection is still up: the closing client's
//     own watches on them fire (NodeDeleted, NodeChildrenChanged) before the rest end with
//     EventNotWatching (hence Close besides Expire); after a real expiry none of them fires;
//   - delete checks the version before the children: a wrong version on a znode with
//     children is ErrBadVersion, not ErrNotEmpty.
package zkmodel

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
)

// Errors the real client returns without a zkclient sentinel (go-zookeeper's own errors there).
var (
	// ErrBadArguments: a malformed path (go-zookeeper's ErrInvalidPath client-side, the server's
	// ErrBadArguments), an unknown mode, or deleting a special path such as "/".
	ErrBadArguments = errors.New("bad arguments (invalid path)")
	// ErrNoChildrenForEphemerals: creating a child of an ephemeral znode.
	ErrNoChildrenForEphemerals = errors.New("ephemeral znodes may not have children")
)

// SessionID names a session; never 0 (0 is the EphemeralOwner of persistent znodes).
type SessionID int64

// Stat is a znode's metadata.
type Stat struct {
	Czxid, Mzxid, Pzxid int64
	Version, CVersion   int32
	EphemeralOwner      SessionID
	NumChildren         int32
	DataLength          int32
}

// Mode is a znode's lifetime and naming, with zkclient.Mode's values.
type Mode int

// Modes, equal to zkclient's.
const (
	Persistent           = Mode(zkclient.Persistent)
	Ephemeral            = Mode(zkclient.Ephemeral)
	PersistentSequential = Mode(zkclient.PersistentSequential)
	EphemeralSequential  = Mode(zkclient.EphemeralSequential)
)

func (m Mode) valid() bool {
	return m == Persistent || m == Ephemeral || m == PersistentSequential || m == EphemeralSequential
}
func (m Mode) ephemeral() bool  { return m == Ephemeral || m == EphemeralSequential }
func (m Mode) sequential() bool { return m == PersistentSequential || m == EphemeralSequential }

// EventType is what a watch event reports.
type EventType int

// Event types.
const (
	NodeCreated EventType = iota + 1
	NodeDeleted
	NodeDataChanged
	NodeChildrenChanged
	// SessionExpired: the watch was dropped because its session expired (go-zookeeper's
	// EventNotWatching).
	SessionExpired
)

func (t EventType) String() string {
	switch t {
	case NodeCreated:
		return "NodeCreated"
	case NodeDeleted:
		return "NodeDeleted"
	case NodeDataChanged:
		return "NodeDataChanged"
	case NodeChildrenChanged:
		return "NodeChildrenChanged"
	case SessionExpired:
		return "SessionExpired"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// WatchID names one W call's watch; never 0 (0 = no watch was set).
type WatchID int64

// Event is one fired watch as its session's client receives it.
type Event struct {
	Type  EventType
	Path  string
	Watch WatchID
}

// watchKind follows go-zookeeper's client-side watcher types.
type watchKind int

const (
	kindExist watchKind = iota // ExistsW on a missing node
	kindData                   // GetW, ExistsW on an existing node
	kindChild                  // ChildrenW
)

type watch struct {
	id   WatchID
	kind watchKind
}

type node struct {
	data     []byte
	stat     Stat
	children map[string]struct{}
	// creates counts the children ever created: the server's internal cversion, which names
	// sequential children. The Stat's CVersion is what the server reports, creates + deletes
	// (it stores creates and reports 2*creates - numChildren).
	creates int32
}

type session struct {
	expired    bool
	watches    map[string][]watch // by path, in registration order
	queue      []Event
	ephemerals map[string]struct{}
}

// Model is the ZooKeeper model. It is not safe for concurrent use (it need not be: the
// simulation drives it from one goroutine).
type Model struct {
	nodes       map[string]*node
	sessions    map[SessionID]*session
	zxid        int64
	lastSession SessionID
	lastWatch   WatchID
	alive       []SessionID // live sessions, ascending: the ones watch triggers visit
}

// New returns a model holding only the root "/".
func New() *Model {
	return &Model{
		nodes:    map[string]*node{"/": {children: map[string]struct{}{}}},
		sessions: map[SessionID]*session{},
	}
}

// NewSession opens a session (a transaction on the server).
func (m *Model) NewSession() SessionID {
	m.lastSession++
	m.zxid++
	m.sessions[m.lastSession] = &session{watches: map[string][]watch{}, ephemerals: map[string]struct{}{}}
	m.alive = append(m.alive, m.lastSession)
	return m.lastSession
}

// Alive reports whether s is a session that was opened and has not ended (Expire, Close).
func (m *Model) Alive(s SessionID) bool {
	ss := m.sessions[s]
	return ss != nil && !ss.expired
}

// Zxid is the last transaction's id.
func (m *Model) Zxid() int64 { return m.zxid }

// Expire ends s as the server's session expiry does (the client was cut off): its outstanding
// watches each get a SessionExpired event (the client learns of the expiry when it reconnects),
// then its ephemeral znodes are deleted in one transaction, firing the other sessions' watches.
// Later calls by s fail with ErrSessionExpired; its queued events can still be delivered.
// Ending an unknown or ended session does nothing.
func (m *Model) Expire(s SessionID) { m.end(s, false) }

// Close ends s as zkclient.Client.Close does: its ephemeral znodes are deleted in one
// transaction while its connection is still up, so the watches this fires reach s too (its
// own watch on one of its ephemerals gets NodeDeleted); then every watch s has left gets
// SessionExpired (go-zookeeper's EventNotWatching on close). Later calls by s fail with
// ErrSessionExpired.
func (m *Model) Close(s SessionID) { m.end(s, true) }

func (m *Model) end(s SessionID, clean bool) {
	ss := m.sessions[s]
	if ss == nil || ss.expired {
		return
	}
	if !clean {
		m.kill(s)
	}
	m.zxid++
	var trig []trigger
	for _, p := range sortedKeys(ss.ephemerals) {
		trig = append(trig, m.deleteNode(p, m.zxid)...)
	}
	m.fire(trig)
	if clean {
		m.kill(s)
	}
}

// kill marks s expired and ends its watches.
func (m *Model) kill(s SessionID) {
	ss := m.sessions[s]
	ss.expired = true
	m.endWatches(ss)
	if i, found := slices.BinarySearch(m.alive, s); found {
		m.alive = slices.Delete(m.alive, i, i+1)
	}
}

// endWatches queues SessionExpired for every watch ss holds, by path, and drops them.
func (m *Model) endWatches(ss *session) {
	for _, p := range sortedKeys(ss.watches) {
		for _, w := range ss.watches[p] {
			ss.queue = append(ss.queue, Event{Type: SessionExpired, Path: p, Watch: w.id})
		}
	}
	ss.watches = map[string][]watch{}
}

// Pending is how many watch events are queued for s and not yet delivered.
func (m *Model) Pending(s SessionID) int {
	if ss := m.sessions[s]; ss != nil {
		return len(ss.queue)
	}
	return 0
}

// Deliver pops s's oldest queued event: the client's ordered view of its notifications.
func (m *Model) Deliver(s SessionID) (Event, bool) {
	ss := m.sessions[s]
	if ss == nil || len(ss.queue) == 0 {
		return Event{}, false
	}
	ev := ss.queue[0]
	ss.queue[0] = Event{}
	ss.queue = ss.queue[1:]
	return ev, true
}

func opErr(op, p string, err error) error {
	return fmt.Errorf("zookeeper %s %s: %w", op, p, err)
}

// live returns s's state if it may make calls.
func (m *Model) live(s SessionID) (*session, error) {
	ss := m.sessions[s]
	if ss == nil || ss.expired {
		return nil, zkclient.ErrSessionExpired
	}
	return ss, nil
}

// read is the common start of the read calls: the client's path check, the session, the node.
func (m *Model) read(s SessionID, op, p string) (*session, *node, error) {
	if !clientValid(p, false) {
		return nil, nil, opErr(op, p, ErrBadArguments)
	}
	ss, err := m.live(s)
	if err != nil {
		return nil, nil, opErr(op, p, err)
	}
	return ss, m.nodes[p], nil
}

func (m *Model) addWatch(ss *session, p string, k watchKind) WatchID {
	m.lastWatch++
	ss.watches[p] = append(ss.watches[p], watch{id: m.lastWatch, kind: k})
	return m.lastWatch
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// Get reads a znode's data.
func (m *Model) Get(s SessionID, p string) ([]byte, Stat, error) {
	_, n, err := m.read(s, "get", p)
	if err != nil {
		return nil, Stat{}, err
	}
	if n == nil {
		return nil, Stat{}, opErr("get", p, zkclient.ErrNoNode)
	}
	return clone(n.data), n.stat, nil
}

// GetW reads a znode's data and watches it for a data change or its deletion. A missing znode
// is ErrNoNode and sets no watch.
func (m *Model) GetW(s SessionID, p string) ([]byte, Stat, WatchID, error) {
	ss, n, err := m.read(s, "get", p)
	if err != nil {
		return nil, Stat{}, 0, err
	}
	if n == nil {
		return nil, Stat{}, 0, opErr("get", p, zkclient.ErrNoNode)
	}
	return clone(n.data), n.stat, m.addWatch(ss, p, kindData), nil
}

// Exists reports whether a znode exists.
func (m *Model) Exists(s SessionID, p string) (bool, Stat, error) {
	_, n, err := m.read(s, "exists", p)
	if err != nil || n == nil {
		return false, Stat{}, err
	}
	return true, n.stat, nil
}

// ExistsW is Exists with a watch: on an existing znode a data watch, on a missing one a watch
// of its creation.
func (m *Model) ExistsW(s SessionID, p string) (bool, Stat, WatchID, error) {
	ss, n, err := m.read(s, "exists", p)
	if err != nil {
		return false, Stat{}, 0, err
	}
	if n == nil {
		return false, Stat{}, m.addWatch(ss, p, kindExist), nil
	}
	return true, n.stat, m.addWatch(ss, p, kindData), nil
}

func sortedChildren(n *node) []string {
	out := make([]string, 0, len(n.children))
	for c := range n.children {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Children lists a znode's children, sorted.
func (m *Model) Children(s SessionID, p string) ([]string, Stat, error) {
	_, n, err := m.read(s, "children", p)
	if err != nil {
		return nil, Stat{}, err
	}
	if n == nil {
		return nil, Stat{}, opErr("children", p, zkclient.ErrNoNode)
	}
	return sortedChildren(n), n.stat, nil
}

// ChildrenW lists a znode's children and watches the list (and the znode's deletion).
func (m *Model) ChildrenW(s SessionID, p string) ([]string, Stat, WatchID, error) {
	ss, n, err := m.read(s, "children", p)
	if err != nil {
		return nil, Stat{}, 0, err
	}
	if n == nil {
		return nil, Stat{}, 0, opErr("children", p, zkclient.ErrNoNode)
	}
	return sortedChildren(n), n.stat, m.addWatch(ss, p, kindChild), nil
}

// Op is one operation of a Multi.
type Op struct {
	kind    opKind
	path    string
	data    []byte
	mode    Mode
	version int32
}

type opKind int

const (
	opCreate opKind = iota + 1
	opSet
	opDelete
	opCheck
)

// CreateOp creates a znode.
func CreateOp(p string, data []byte, mode Mode) Op {
	return Op{kind: opCreate, path: p, data: clone(data), mode: mode}
}

// SetOp writes a znode's data if its version matches (-1: any).
func SetOp(p string, data []byte, version int32) Op {
	return Op{kind: opSet, path: p, data: clone(data), version: version}
}

// DeleteOp removes a znode if its version matches (-1: any).
func DeleteOp(p string, version int32) Op { return Op{kind: opDelete, path: p, version: version} }

// CheckOp asserts a znode exists at a version (-1: any).
func CheckOp(p string, version int32) Op { return Op{kind: opCheck, path: p, version: version} }

// trigger is one watch trigger of an applied change, fired once the transaction commits.
type trigger struct {
	path string
	ev   EventType
}

// undo restores the tree after a failed multi.
type undo func()

// Create makes a znode and returns its path (with the counter of a sequential one).
func (m *Model) Create(s SessionID, p string, data []byte, mode Mode) (string, error) {
	if !clientValid(p, mode.sequential()) {
		return "", opErr("create", p, ErrBadArguments)
	}
	if _, err := m.live(s); err != nil {
		return "", opErr("create", p, err)
	}
	out, trig, _, err := m.create(s, p, data, mode, m.zxid+1)
	if err != nil {
		return "", opErr("create", p, err)
	}
	m.zxid++
	m.fire(trig)
	return out, nil
}

// Set writes a znode's data if its version matches (-1: any) and returns its new Stat.
func (m *Model) Set(s SessionID, p string, data []byte, version int32) (Stat, error) {
	if !clientValid(p, false) {
		return Stat{}, opErr("set", p, ErrBadArguments)
	}
	if _, err := m.live(s); err != nil {
		return Stat{}, opErr("set", p, err)
	}
	trig, _, err := m.set(p, data, version, m.zxid+1)
	if err != nil {
		return Stat{}, opErr("set", p, err)
	}
	m.zxid++
	m.fire(trig)
	return m.nodes[p].stat, nil
}

// Delete removes a znode if its version matches (-1: any) and it has no children.
func (m *Model) Delete(s SessionID, p string, version int32) error {
	if !clientValid(p, false) {
		return opErr("delete", p, ErrBadArguments)
	}
	if _, err := m.live(s); err != nil {
		return opErr("delete", p, err)
	}
	trig, _, err := m.delete(p, version, m.zxid+1)
	if err != nil {
		return opErr("delete", p, err)
	}
	m.zxid++
	m.fire(trig)
	return nil
}

// Multi applies ops atomically in one transaction: all or none. The error names the first
// failing op's path ("zookeeper multi /a: ..."), as zkclient.Multi's does. The server, not the
// client, validates a multi's paths.
func (m *Model) Multi(s SessionID, ops ...Op) error {
	if _, err := m.live(s); err != nil {
		paths := make([]string, len(ops))
		for i, op := range ops {
			paths[i] = op.path
		}
		return opErr("multi", strings.Join(paths, ","), err)
	}
	if len(ops) == 0 {
		return nil
	}
	zxid := m.zxid + 1
	var trig []trigger
	var undos []undo
	for _, op := range ops {
		var t []trigger
		var u undo
		var err error
		switch op.kind {
		case opCreate:
			_, t, u, err = m.create(s, op.path, op.data, op.mode, zxid)
		case opSet:
			t, u, err = m.set(op.path, op.data, op.version, zxid)
		case opDelete:
			t, u, err = m.delete(op.path, op.version, zxid)
		case opCheck:
			err = m.check(op.path, op.version)
		default:
			err = ErrBadArguments
		}
		if err != nil {
			for i := len(undos) - 1; i >= 0; i-- {
				undos[i]()
			}
			return opErr("multi", op.path, err)
		}
		trig = append(trig, t...)
		if u != nil {
			undos = append(undos, u)
		}
	}
	m.zxid = zxid
	m.fire(trig)
	return nil
}

// parentOf splits a path at its last slash, as the server does ("/a" → "/", "a").
func parentOf(p string) (parent, name string, ok bool) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", "", false
	}
	parent = p[:i]
	if parent == "" {
		parent = "/"
	}
	return parent, p[i+1:], true
}

// create is the server's create: checks in its order, then the change. The caller validated
// the path client-side (or, in a multi, did not).
func (m *Model) create(s SessionID, p string, data []byte, mode Mode, zxid int64) (string, []trigger, undo, error) {
	if !mode.valid() || strings.IndexByte(p, 0) >= 0 {
		return "", nil, nil, ErrBadArguments
	}
	parentPath, _, ok := parentOf(p)
	if !ok {
		return "", nil, nil, ErrBadArguments
	}
	parent := m.nodes[parentPath]
	if parent == nil {
		return "", nil, nil, zkclient.ErrNoNode
	}
	if mode.sequential() {
		p += fmt.Sprintf("%010d", parent.creates)
	}
	if !serverValid(p) {
		return "", nil, nil, ErrBadArguments
	}
	if m.nodes[p] != nil {
		return "", nil, nil, zkclient.ErrNodeExists
	}
	if parent.stat.EphemeralOwner != 0 {
		return "", nil, nil, ErrNoChildrenForEphemerals
	}
	_, name, _ := parentOf(p)
	var owner SessionID
	if mode.ephemeral() {
		owner = s
	}
	n := &node{data: clone(data), children: map[string]struct{}{},
		stat: Stat{Czxid: zxid, Mzxid: zxid, Pzxid: zxid, EphemeralOwner: owner, DataLength: int32(len(data))}}
	oldParent, oldCreates := parent.stat, parent.creates
	m.nodes[p] = n
	parent.children[name] = struct{}{}
	parent.creates++
	parent.stat.CVersion++
	parent.stat.NumChildren++
	parent.stat.Pzxid = zxid
	if owner != 0 {
		m.sessions[owner].ephemerals[p] = struct{}{}
	}
	u := func() {
		delete(m.nodes, p)
		delete(parent.children, name)
		parent.stat, parent.creates = oldParent, oldCreates
		if owner != 0 {
			delete(m.sessions[owner].ephemerals, p)
		}
	}
	return p, []trigger{{p, NodeCreated}, {parentPath, NodeChildrenChanged}}, u, nil
}

func versionOK(want, have int32) bool { return want == -1 || want == have }

func (m *Model) set(p string, data []byte, version int32, zxid int64) ([]trigger, undo, error) {
	if !serverValid(p) {
		return nil, nil, ErrBadArguments
	}
	n := m.nodes[p]
	if n == nil {
		return nil, nil, zkclient.ErrNoNode
	}
	if !versionOK(version, n.stat.Version) {
		return nil, nil, zkclient.ErrBadVersion
	}
	oldData, oldStat := n.data, n.stat
	n.data = clone(data)
	n.stat.Version++
	n.stat.Mzxid = zxid
	n.stat.DataLength = int32(len(data))
	u := func() { n.data, n.stat = oldData, oldStat }
	return []trigger{{p, NodeDataChanged}}, u, nil
}

// specialPath: the paths the server refuses to delete.
func specialPath(p string) bool {
	switch p {
	case "/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config":
		return true
	}
	return false
}

func (m *Model) delete(p string, version int32, zxid int64) ([]trigger, undo, error) {
	parentPath, name, ok := parentOf(p)
	if !ok || strings.IndexByte(p, 0) >= 0 || specialPath(p) {
		return nil, nil, ErrBadArguments
	}
	parent, n := m.nodes[parentPath], m.nodes[p]
	if parent == nil || n == nil {
		return nil, nil, zkclient.ErrNoNode
	}
	if !versionOK(version, n.stat.Version) {
		return nil, nil, zkclient.ErrBadVersion
	}
	if len(n.children) > 0 {
		return nil, nil, zkclient.ErrNotEmpty
	}
	oldParent := parent.stat
	trig := m.deleteNode(p, zxid)
	u := func() {
		m.nodes[p] = n
		parent.children[name] = struct{}{}
		parent.stat = oldParent
		if o := n.stat.EphemeralOwner; o != 0 {
			m.sessions[o].ephemerals[p] = struct{}{}
		}
	}
	return trig, u, nil
}

// deleteNode removes the childless znode p (it exists, and so does its parent).
func (m *Model) deleteNode(p string, zxid int64) []trigger {
	parentPath, name, _ := parentOf(p)
	parent, n := m.nodes[parentPath], m.nodes[p]
	if parent == nil || n == nil {
		return nil
	}
	delete(m.nodes, p)
	delete(parent.children, name)
	parent.stat.CVersion++
	parent.stat.NumChildren--
	parent.stat.Pzxid = zxid
	if o := n.stat.EphemeralOwner; o != 0 {
		if ss := m.sessions[o]; ss != nil {
			delete(ss.ephemerals, p)
		}
	}
	return []trigger{{p, NodeDeleted}, {parentPath, NodeChildrenChanged}}
}

func (m *Model) check(p string, version int32) error {
	if !serverValid(p) {
		return ErrBadArguments
	}
	n := m.nodes[p]
	if n == nil {
		return zkclient.ErrNoNode
	}
	if !versionOK(version, n.stat.Version) {
		return zkclient.ErrBadVersion
	}
	return nil
}

// firedKinds is which client-side watchers an event reaches (go-zookeeper's notifyWatches), in
// its order.
func firedKinds(ev EventType) []watchKind {
	switch ev {
	case NodeCreated:
		return []watchKind{kindExist}
	case NodeDataChanged:
		return []watchKind{kindExist, kindData}
	case NodeChildrenChanged:
		return []watchKind{kindChild}
	case NodeDeleted:
		return []watchKind{kindExist, kindData, kindChild}
	}
	return nil
}

// fire queues the events of a committed transaction's triggers, in order, for every live
// session's matching watches, and removes those watches (one-shot).
func (m *Model) fire(trig []trigger) {
	for _, t := range trig {
		kinds := firedKinds(t.ev)
		for _, id := range m.alive {
			ss := m.sessions[id]
			ws := ss.watches[t.path]
			if ss.expired || len(ws) == 0 {
				continue
			}
			var keep []watch
			for _, k := range kinds {
				for _, w := range ws {
					if w.kind == k {
						ss.queue = append(ss.queue, Event{Type: t.ev, Path: t.path, Watch: w.id})
					}
				}
			}
			for _, w := range ws {
				if !containsKind(kinds, w.kind) {
					keep = append(keep, w)
				}
			}
			if len(keep) == 0 {
				delete(ss.watches, t.path)
			} else {
				ss.watches[t.path] = keep
			}
		}
	}
}

// sessionIDs lists every session ever opened, in order.
func (m *Model) sessionIDs() []SessionID {
	ids := make([]SessionID, 0, len(m.sessions))
	for id := range m.sessions {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func containsKind(ks []watchKind, k watchKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func sortedKeys[V any](mp map[string]V) []string {
	out := make([]string, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// clientValid is go-zookeeper's validatePath, which every single call runs before sending:
// absolute, no trailing slash (allowed for sequential creates, whose counter follows it), no
// empty component, no "." or ".." component, no NUL or control characters, valid UTF-8.
func clientValid(p string, sequential bool) bool {
	n := len(p)
	if n == 0 || p[0] != '/' {
		return false
	}
	if n == 1 {
		return true
	}
	if !sequential && p[n-1] == '/' {
		return false
	}
	for i := 1; i < n; {
		r, w := utf8.DecodeRuneInString(p[i:])
		switch {
		case r == '/':
			if p[i-1] == '/' {
				return false
			}
		case r == '.':
			if dotComponent(p, i) {
				return false
			}
		case badRune(r):
			return false
		}
		i += w
	}
	return true
}

// dotComponent: the '.' at i ends a "." or ".." component.
func dotComponent(p string, i int) bool {
	if i+1 < len(p) && p[i+1] != '/' {
		return false
	}
	if p[i-1] == '/' {
		return true
	}
	return p[i-1] == '.' && i >= 2 && p[i-2] == '/'
}

// badRune is go-zookeeper's set of refused characters (invalid UTF-8 decodes to U+FFFD, in it).
func badRune(r rune) bool {
	return r <= 0x1f || (r >= 0x7f && r <= 0x9f) || (r >= 0xf000 && r <= 0xf8ff) || (r >= 0xfff0 && r < 0xffff)
}

// serverValid is the server's PathUtils.validatePath over the Java string the server decodes
// (UTF-16: characters outside the Basic Multilingual Plane are surrogates, which it refuses; so
// does it U+FFFF and the whole U+D800–U+F8FF range).
func serverValid(p string) bool {
	n := len(p)
	if n == 0 || p[0] != '/' {
		return false
	}
	if n == 1 {
		return true
	}
	if p[n-1] == '/' {
		return false
	}
	for i := 1; i < n; {
		r, w := utf8.DecodeRuneInString(p[i:])
		switch {
		case r == '/':
			if p[i-1] == '/' {
				return false
			}
		case r == '.':
			if dotComponent(p, i) {
				return false
			}
		case r <= 0x1f || (r >= 0x7f && r <= 0x9f) || (r >= 0xd800 && r <= 0xf8ff) || r >= 0xfff0:
			return false
		}
		i += w
	}
	return true
}

// Check verifies the model's own invariants (for tests and simulations): every znode but the
// root has its parent, which lists it; NumChildren and DataLength match; ephemeral znodes have
// no children and belong to live sessions, which list them; zxids never exceed the counter.
func (m *Model) Check() error {
	for _, p := range sortedKeys(m.nodes) {
		n := m.nodes[p]
		st := n.stat
		if int(st.NumChildren) != len(n.children) {
			return fmt.Errorf("%s: NumChildren %d, %d children", p, st.NumChildren, len(n.children))
		}
		if st.CVersion != 2*n.creates-st.NumChildren {
			return fmt.Errorf("%s: CVersion %d, %d creates, %d children", p, st.CVersion, n.creates, st.NumChildren)
		}
		if int(st.DataLength) != len(n.data) {
			return fmt.Errorf("%s: DataLength %d, %d bytes", p, st.DataLength, len(n.data))
		}
		if st.Czxid > m.zxid || st.Mzxid > m.zxid || st.Pzxid > m.zxid || st.Mzxid < st.Czxid || st.Pzxid < st.Czxid {
			return fmt.Errorf("%s: zxids %d/%d/%d, counter %d", p, st.Czxid, st.Mzxid, st.Pzxid, m.zxid)
		}
		for c := range n.children {
			cp := p + "/" + c
			if p == "/" {
				cp = "/" + c
			}
			if m.nodes[cp] == nil {
				return fmt.Errorf("%s lists missing child %q", p, c)
			}
		}
		if p != "/" {
			parent, name, _ := parentOf(p)
			pn := m.nodes[parent]
			if pn == nil {
				return fmt.Errorf("%s: parent missing", p)
			}
			if _, ok := pn.children[name]; !ok {
				return fmt.Errorf("%s: not listed by its parent", p)
			}
		}
		if o := st.EphemeralOwner; o != 0 {
			if len(n.children) > 0 {
				return fmt.Errorf("ephemeral %s has children", p)
			}
			ss := m.sessions[o]
			if ss == nil || ss.expired {
				return fmt.Errorf("ephemeral %s outlives its session %d", p, o)
			}
			if _, ok := ss.ephemerals[p]; !ok {
				return fmt.Errorf("ephemeral %s not listed by session %d", p, o)
			}
		}
	}
	var alive []SessionID
	for _, id := range m.sessionIDs() {
		ss := m.sessions[id]
		if !ss.expired {
			alive = append(alive, id)
		}
		for _, p := range sortedKeys(ss.ephemerals) {
			if n := m.nodes[p]; n == nil || n.stat.EphemeralOwner != id {
				return fmt.Errorf("session %d lists %s, not its ephemeral", id, p)
			}
		}
		if ss.expired && (len(ss.ephemerals) > 0 || len(ss.watches) > 0) {
			return fmt.Errorf("expired session %d keeps ephemerals or watches", id)
		}
	}
	if !slices.Equal(alive, m.alive) {
		return fmt.Errorf("live sessions %v, listed %v", alive, m.alive)
	}
	return nil
}
