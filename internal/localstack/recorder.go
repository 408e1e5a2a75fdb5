package localstack

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Kinds of Recorder snapshots.
const (
	// KindCurrent snapshots current/<svc>: who is online, on which version.
	KindCurrent = "current"
	// KindStaging snapshots the staging queue staging/<svc>/*: who is staged or upgrading.
	KindStaging = "staging"
)

// Snapshot is one observed state of a service's current/ or staging/ children.
type Snapshot struct {
	Time    time.Time
	Service string
	Kind    string
	// Members maps node name to its version (current) or to "<state> <version>" (staging).
	Members map[string]string
	// Order lists staging children in queue order (staging only).
	Order []string
	// CVersion is the parent's child version (ZooKeeper counts every create and delete).
	CVersion int32
	// Missed is how many intermediate states this snapshot skipped: ZooKeeper counted k child
	// creations and deletions since the previous snapshot (CVersion), and k > 1 means k-1
	// states between the two were never seen (one-shot watches coalesce quick changes). 0 means
	// this snapshot shows exactly one change.
	Missed int32
	// Zxid is the parent's pzxid: the ZooKeeper transaction of the last child creation or
	// deletion this snapshot shows. Exact says the snapshot shows exactly one such change since
	// the previous one (so Zxid is that change's transaction); otherwise Zxid is an upper bound
	// for each change it shows. Zxids order changes across services, which observation times
	// (each service is read on its own) cannot.
	Zxid  int64
	Exact bool
	// Created maps node to the transaction that created its registration (current only).
	Created map[string]int64
	// Malformed lists children whose payload did not decode.
	Malformed []string
}

// Online is len(Members) for a current snapshot.
func (s Snapshot) Online() int { return len(s.Members) }

// VersionChange is one step of a node's history in current/: Version "" means it went offline.
type VersionChange struct {
	Time    time.Time
	Version string
	// Zxid is the ZooKeeper transaction of the change when Exact (a registration's creation;
	// a deletion seen as the only change between two snapshots), else an upper bound for it.
	Zxid  int64
	Exact bool
}

// Recorder watches current/<svc> and staging/<svc> of some services with its own ZooKeeper
// session, re-arming its watches after every event, and records every membership change it
// sees with a timestamp. It is the independent witness for the quorum invariant.
type Recorder struct {
	zk     *zkclient.Client
	layout zklayout.Layout
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	snapshots map[string][]Snapshot // key kind/svc
	watched   map[string]bool
	errs      []error
	changed   chan struct{}
}

// NewRecorder dials servers (a comma-separated connect string) and starts watching each
// service. Stop it with Stop.
func NewRecorder(ctx context.Context, servers string, layout zklayout.Layout, services ...string) (*Recorder, error) {
	c, err := zkclient.Dial(ctx, zkclient.Config{
		Servers:        zkclient.ParseServers(servers),
		SessionTimeout: 10 * time.Second,
		Logger:         logr.Discard(),
	})
	if err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{zk: c, layout: layout, cancel: cancel, snapshots: map[string][]Snapshot{}, watched: map[string]bool{}, changed: make(chan struct{})}
	for _, svc := range services {
		if err := r.Watch(rctx, svc); err != nil {
			r.Stop()
			return nil, err
		}
	}
	return r, nil
}

// Watch adds a service to record (a service already watched is left as it is). Its first
// snapshot is taken before Watch returns.
func (r *Recorder) Watch(ctx context.Context, svc string) error {
	if err := zklayout.ValidService(svc); err != nil {
		return fmt.Errorf("recorder: %w", err)
	}
	r.mu.Lock()
	if r.watched[svc] {
		r.mu.Unlock()
		return nil
	}
	r.watched[svc] = true
	r.mu.Unlock()
	for _, kind := range []string{KindCurrent, KindStaging} {
		first := make(chan struct{})
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.loop(ctx, svc, kind, first)
		}()
		select {
		case <-first:
		case <-ctx.Done():
			return fmt.Errorf("recorder: watch %s: %w", svc, ctx.Err())
		}
	}
	return nil
}

// Stop ends the watches and the session.
func (r *Recorder) Stop() {
	r.cancel()
	r.wg.Wait()
	r.zk.Close()
}

// watcher keeps one service's current/ or staging/ children under watch: a child watch on
// the parent (creations and deletions) and a data watch on every child (its payload changing,
// e.g. a staged node turning to upgrading, and its deletion, each as its own event).
type watcher struct {
	r            *Recorder
	svc, kind    string
	parent       string
	notify       chan struct{}
	mu           sync.Mutex
	parentArmed  bool
	childArmed   map[string]bool
	values       map[string]childValue
	lastCVersion int32
	haveCVersion bool
}

type childValue struct {
	node, value string
	malformed   bool
	czxid       int64
}

// loop keeps one service's current/ or staging/ children under watch until ctx ends.
func (r *Recorder) loop(ctx context.Context, svc, kind string, first chan struct{}) {
	w := &watcher{r: r, svc: svc, kind: kind, parent: r.layout.CurrentService(svc),
		notify: make(chan struct{}, 1), childArmed: map[string]bool{}, values: map[string]childValue{}}
	if kind == KindStaging {
		w.parent = r.layout.StagingService(svc)
	}
	signalFirst := func() {
		if first != nil {
			close(first)
			first = nil
		}
	}
	defer signalFirst()
	for ctx.Err() == nil {
		err := w.observe(ctx)
		signalFirst()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, zkclient.ErrSessionExpired) && !errors.Is(err, zkclient.ErrUnavailable) && !errors.Is(err, zkclient.ErrClosed) {
				r.addErr(fmt.Errorf("recorder %s %s: %w", kind, svc, err))
			}
			// The connection is down or the session moved: forget the watches, back off
			// briefly, then re-read and re-arm everything.
			w.mu.Lock()
			w.parentArmed = false
			clear(w.childArmed)
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
		}
	}
}

// forward waits for zw to fire in the background, then runs disarm and wakes the loop.
func (w *watcher) forward(ctx context.Context, zw zkclient.Watch, disarm func()) {
	go func() {
		select {
		case <-zw.C():
			zw.Fired()
		case <-ctx.Done():
			return
		}
		w.mu.Lock()
		disarm()
		w.mu.Unlock()
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}()
}

// observe reads the children (arming the parent's watch when it is not armed, or waiting for
// the parent to exist), reads and watches every child not yet watched, and records a
// snapshot if anything changed.
func (w *watcher) observe(ctx context.Context) error {
	zk := w.r.zk
	w.mu.Lock()
	armed := w.parentArmed
	w.mu.Unlock()
	var (
		children []string
		st       zkclient.Stat
		err      error
	)
	if armed {
		children, st, err = zk.Children(ctx, w.parent)
	} else {
		var cw zkclient.Watch
		children, st, cw, err = zk.ChildrenW(ctx, w.parent)
		if err == nil {
			w.mu.Lock()
			w.parentArmed = true
			w.mu.Unlock()
			w.forward(ctx, cw, func() { w.parentArmed = false })
		}
	}
	if errors.Is(err, zkclient.ErrNoNode) {
		exists, _, ew, err := zk.ExistsW(ctx, w.parent)
		if err != nil {
			return err
		}
		if exists {
			w.wake() // created in between: read again at once
			return nil
		}
		w.mu.Lock()
		w.parentArmed = true
		w.mu.Unlock()
		w.forward(ctx, ew, func() { w.parentArmed = false })
		w.haveCVersion = false
		w.r.record(Snapshot{Time: time.Now(), Service: w.svc, Kind: w.kind, Members: map[string]string{}})
		return nil
	}
	if err != nil {
		return err
	}

	snap := Snapshot{Time: time.Now(), Service: w.svc, Kind: w.kind, Members: map[string]string{}, CVersion: st.CVersion,
		Zxid: st.Pzxid, Created: map[string]int64{}}
	if w.haveCVersion && st.CVersion-w.lastCVersion > 1 {
		snap.Missed = st.CVersion - w.lastCVersion - 1
	}
	snap.Exact = w.haveCVersion && st.CVersion-w.lastCVersion == 1

	names := children
	if w.kind == KindStaging {
		ordered, bad := zklayout.SortSeq(children)
		snap.Malformed = append(snap.Malformed, bad...)
		names = names[:0:0]
		for _, sq := range ordered {
			names = append(names, sq.Child)
		}
	}
	present := map[string]bool{}
	for _, child := range names {
		present[child] = true
		w.mu.Lock()
		known := w.childArmed[child]
		v := w.values[child]
		w.mu.Unlock()
		if !known {
			data, cst, dw, err := zk.GetW(ctx, w.parent+"/"+child)
			if errors.Is(err, zkclient.ErrNoNode) {
				// Gone since the children were read: leaving it out would mix two moments
				// (children created since then are not listed either) and could show fewer
				// members than ever were. Read everything again instead.
				w.wake()
				return nil
			}
			if err != nil {
				return err
			}
			v = w.decode(child, data)
			v.czxid = cst.Czxid
			w.mu.Lock()
			w.childArmed[child] = true
			w.values[child] = v
			w.mu.Unlock()
			w.forward(ctx, dw, func() { delete(w.childArmed, child) })
		}
		if v.malformed {
			snap.Malformed = append(snap.Malformed, child)
			if w.kind == KindCurrent {
				snap.Members[child] = "?"
			}
			continue
		}
		snap.Members[v.node] = v.value
		if w.kind == KindCurrent {
			snap.Created[v.node] = v.czxid
		}
		if w.kind == KindStaging {
			snap.Order = append(snap.Order, v.node)
		}
	}
	w.mu.Lock()
	for child := range w.values {
		if !present[child] {
			delete(w.values, child)
		}
	}
	w.mu.Unlock()
	w.lastCVersion, w.haveCVersion = st.CVersion, true
	w.r.record(snap)
	return nil
}

func (w *watcher) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// decode turns a child's payload into its member entry.
func (w *watcher) decode(child string, data []byte) childValue {
	if w.kind == KindCurrent {
		var cur zklayout.Current
		if err := zklayout.Decode(data, &cur); err != nil {
			return childValue{malformed: true}
		}
		return childValue{node: child, value: cur.Version}
	}
	var stg zklayout.Staged
	if err := zklayout.Decode(data, &stg); err != nil {
		return childValue{malformed: true}
	}
	return childValue{node: stg.Node, value: stg.State + " " + stg.Version}
}

func key(kind, svc string) string { return kind + "/" + svc }

// record appends snap unless it shows the same members as the last snapshot. It stamps the
// snapshot's time under the lock, so every history is in time order.
func (r *Recorder) record(snap Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap.Time = time.Now()
	k := key(snap.Kind, snap.Service)
	hist := r.snapshots[k]
	if n := len(hist); n > 0 {
		prev := hist[n-1]
		if maps.Equal(prev.Members, snap.Members) && slices.Equal(prev.Order, snap.Order) && snap.Missed == 0 &&
			slices.Equal(prev.Malformed, snap.Malformed) {
			return
		}
	}
	r.snapshots[k] = append(hist, snap)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Recorder) addErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < 100 {
		r.errs = append(r.errs, err)
	}
}

// Errors are the unexpected errors the recorder met (connection losses are not counted).
func (r *Recorder) Errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// Changed is closed at the next recorded snapshot (for select loops that redraw on change).
func (r *Recorder) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Snapshots returns every recorded snapshot of kind (KindCurrent or KindStaging) for svc.
func (r *Recorder) Snapshots(svc, kind string) []Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.snapshots[key(kind, svc)])
}

// Online returns the latest current/<svc> members: node to version.
func (r *Recorder) Online(svc string) map[string]string {
	return r.latest(svc, KindCurrent).Members
}

// Staging returns the latest staging queue members: node to "<state> <version>".
func (r *Recorder) Staging(svc string) map[string]string {
	return r.latest(svc, KindStaging).Members
}

func (r *Recorder) latest(svc, kind string) Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	hist := r.snapshots[key(kind, svc)]
	if len(hist) == 0 {
		return Snapshot{Members: map[string]string{}}
	}
	s := hist[len(hist)-1]
	s.Members = maps.Clone(s.Members)
	return s
}

// MinOnline is the smallest number of online nodes of svc seen from since on, counting the
// snapshot in force at since. It also returns the snapshot where that minimum was seen and
// the number of missed changes in the window (see Snapshot.Missed): when that is 0, every
// membership change was observed individually and the minimum is exact.
func (r *Recorder) MinOnline(svc string, since time.Time) (min int, at Snapshot, missed int32) {
	hist := r.Snapshots(svc, KindCurrent)
	min = -1
	for i, s := range hist {
		if s.Time.Before(since) && i+1 < len(hist) && !hist[i+1].Time.After(since) {
			continue // superseded before the window started
		}
		if s.Time.After(since) {
			missed += s.Missed
		}
		if min < 0 || s.Online() < min {
			min, at = s.Online(), s
		}
	}
	return min, at, missed
}

// History returns node's version changes in current/<svc>, in order.
func (r *Recorder) History(svc, node string) []VersionChange {
	var out []VersionChange
	last, seen := "", false
	for _, s := range r.Snapshots(svc, KindCurrent) {
		v := s.Members[node]
		if !seen || v != last {
			if seen || v != "" {
				c := VersionChange{Time: s.Time, Version: v, Zxid: s.Zxid, Exact: s.Exact}
				if v != "" && s.Created[node] != 0 {
					c.Zxid, c.Exact = s.Created[node], true
				}
				out = append(out, c)
			}
			last, seen = v, true
		}
	}
	return out
}

// WaitOnline blocks until cond holds for the online members (node to version) of svc, ctx
// ends, or timeout passes. It wakes on every recorded change, without polling.
func (r *Recorder) WaitOnline(ctx context.Context, svc string, timeout time.Duration, what string, cond func(map[string]string) bool) error {
	return r.wait(ctx, svc, KindCurrent, timeout, what, cond)
}

// WaitStaging is WaitOnline for the staging queue: cond sees node to "<state> <version>"
// (state ready or upgrading), e.g. to act while a node is in the middle of its upgrade.
func (r *Recorder) WaitStaging(ctx context.Context, svc string, timeout time.Duration, what string, cond func(map[string]string) bool) error {
	return r.wait(ctx, svc, KindStaging, timeout, what, cond)
}

func (r *Recorder) wait(ctx context.Context, svc, kind string, timeout time.Duration, what string, cond func(map[string]string) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ch := r.Changed()
		members := r.latest(svc, kind).Members
		if cond(members) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s in %s/%s: %w (members: %s)", what, kind, svc, ctx.Err(), FormatMembers(members))
		}
	}
}

// Report renders every recorded snapshot of svc, for failure messages.
func (r *Recorder) Report(svc string) string {
	var b strings.Builder
	for _, kind := range []string{KindCurrent, KindStaging} {
		fmt.Fprintf(&b, "%s/%s:\n", kind, svc)
		for _, s := range r.Snapshots(svc, kind) {
			fmt.Fprintf(&b, "  %s cversion=%d zxid=0x%x", s.Time.Format("15:04:05.000"), s.CVersion, s.Zxid)
			if s.Exact {
				b.WriteString(" exact")
			}
			if kind == KindCurrent {
				fmt.Fprintf(&b, " online=%d", s.Online())
			}
			if s.Missed > 0 {
				fmt.Fprintf(&b, " missed=%d", s.Missed)
			}
			if len(s.Malformed) > 0 {
				fmt.Fprintf(&b, " malformed=%v", s.Malformed)
			}
			if kind == KindStaging && len(s.Order) > 0 {
				fmt.Fprintf(&b, " order=%v", s.Order)
			}
			fmt.Fprintf(&b, " %s\n", FormatMembers(s.Members))
		}
	}
	return b.String()
}

// FormatMembers renders a node map sorted by node name.
func FormatMembers(m map[string]string) string {
	nodes := slices.Collect(maps.Keys(m))
	sort.Strings(nodes)
	parts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		parts = append(parts, n+"="+m[n])
	}
	return "{" + strings.Join(parts, " ") + "}"
}
