package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// snapshot is one state of current/<svc> or staging/<svc> seen by the observer.
type snapshot struct {
	Time    time.Time
	Service string
	Kind    string // "current" or "staging"
	// Members maps a node to its version (current) or to "<state> <version>" (staging).
	Members map[string]string
	// Rounds maps an upgrading node (staging) to the roll call round it says it counted.
	Rounds map[string]int32
}

// observer watches current/<svc> and staging/<svc> of the campaign's services with its own
// ZooKeeper session (go-zookeeper directly: nothing of the agent or operator), re-arming its
// child watches after every event, and keeps every state it sees with a timestamp. The
// payloads are read as plain JSON for the few fields it needs.
type observer struct {
	conn   *zk.Conn
	root   string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	snaps []snapshot
	// rounds holds, per service, the start (ZooKeeper's mtime) of each roll call round seen.
	rounds  map[string]map[int32]time.Time
	changes int // current/ snapshots recorded
	changed chan struct{}
	errs    []string
}

func newObserver(servers, root string, services []string) (*observer, error) {
	conn, _, err := zk.Connect(strings.Split(servers, ","), 10*time.Second, zk.WithLogger(log.New(io.Discard, "", 0)))
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &observer{conn: conn, root: root, cancel: cancel, changed: make(chan struct{}), rounds: map[string]map[int32]time.Time{}}
	for _, svc := range services {
		o.rounds[svc] = map[int32]time.Time{}
		o.wg.Add(1)
		go o.watchRollCall(ctx, svc)
		for _, kind := range []string{"current", "staging"} {
			o.wg.Add(1)
			go o.watch(ctx, svc, kind)
		}
	}
	return o, nil
}

func (o *observer) Stop() {
	o.cancel()
	o.conn.Close()
	o.wg.Wait()
}

// watch keeps a child watch on <root>/<kind>/<svc> (an exists watch while it is missing).
func (o *observer) watch(ctx context.Context, svc, kind string) {
	defer o.wg.Done()
	dir := path.Join(o.root, kind, svc)
	for ctx.Err() == nil {
		children, _, ev, err := o.conn.ChildrenW(dir)
		if errors.Is(err, zk.ErrNoNode) {
			var ok bool
			ok, _, ev, err = o.conn.ExistsW(dir)
			if err == nil && ok {
				continue // created meanwhile
			}
			if err == nil {
				o.record(snapshot{Time: time.Now(), Service: svc, Kind: kind, Members: map[string]string{}})
			}
		} else if err == nil {
			o.record(o.read(dir, svc, kind, children))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			o.addErr(fmt.Sprintf("%s: %v", dir, err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond): // retry pace while ZooKeeper is away
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-ev:
		}
	}
}

// watchRollCall records the start of every round of <root>/rollcall/<svc> it sees: the
// znode's data version is the round, its mtime (ZooKeeper's clock, this machine's) the start.
// A round set and superseded between two reads is missed; the checker then bounds its start
// by the next round seen (or the stop), which only makes it stricter.
func (o *observer) watchRollCall(ctx context.Context, svc string) {
	defer o.wg.Done()
	p := path.Join(o.root, "rollcall", svc)
	for ctx.Err() == nil {
		ok, st, ev, err := o.conn.ExistsW(p)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			o.addErr(fmt.Sprintf("%s: %v", p, err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond): // retry pace while ZooKeeper is away
			}
			continue
		}
		if ok && st.Version > 0 {
			o.mu.Lock()
			o.rounds[svc][st.Version] = time.UnixMilli(st.Mtime)
			o.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-ev:
		}
	}
}

// Rounds is a copy of the roll call rounds seen: service -> round -> start.
func (o *observer) Rounds() map[string]map[int32]time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]map[int32]time.Time{}
	for svc, m := range o.rounds {
		out[svc] = maps.Clone(m)
	}
	return out
}

// read gets each child's payload; a child gone meanwhile is left out (the next event shows it).
func (o *observer) read(dir, svc, kind string, children []string) snapshot {
	s := snapshot{Time: time.Now(), Service: svc, Kind: kind, Members: map[string]string{}}
	for _, c := range children {
		data, _, err := o.conn.Get(path.Join(dir, c))
		if err != nil {
			continue
		}
		var p struct {
			Node     string `json:"node"`
			Version  string `json:"version"`
			State    string `json:"state"`
			RollCall int32  `json:"rollCall"`
		}
		if err := json.Unmarshal(data, &p); err != nil || p.Node == "" {
			o.addErr(fmt.Sprintf("%s/%s: undecodable payload", dir, c))
			continue
		}
		if kind == "current" {
			s.Members[p.Node] = p.Version
		} else {
			s.Members[p.Node] = p.State + " " + p.Version
			if p.RollCall > 0 {
				if s.Rounds == nil {
					s.Rounds = map[string]int32{}
				}
				s.Rounds[p.Node] = p.RollCall
			}
		}
	}
	return s
}

func (o *observer) record(s snapshot) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.snaps = append(o.snaps, s)
	if s.Kind == "current" {
		o.changes++
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *observer) addErr(e string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs) < 50 {
		o.errs = append(o.errs, e)
	}
}

// Changes is the number of current/ states seen so far and a channel closed at the next one.
func (o *observer) Changes() (int, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changes, o.changed
}

// Latest is the last state of kind/svc seen.
func (o *observer) Latest(svc, kind string) map[string]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.snaps) - 1; i >= 0; i-- {
		if s := o.snaps[i]; s.Service == svc && s.Kind == kind {
			return maps.Clone(s.Members)
		}
	}
	return map[string]string{}
}

// Snapshots is a copy of every state seen, in order.
func (o *observer) Snapshots() []snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]snapshot(nil), o.snaps...)
}

// waitFor waits until cond holds on the observer's latest states, or ctx ends.
func (o *observer) waitFor(ctx context.Context, cond func() bool) error {
	for {
		o.mu.Lock()
		ch := o.changed
		o.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// upgrading lists the nodes whose staging child says upgrading.
func upgrading(staging map[string]string) []string {
	var out []string
	for n, st := range staging {
		if strings.HasPrefix(st, "upgrading ") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// failures reads failures/<svc>/* now: node -> "kind version: reason".
func (o *observer) failures(svc string) (map[string]string, error) {
	dir := path.Join(o.root, "failures", svc)
	children, _, err := o.conn.Children(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("observer: %s: %w", dir, err)
	}
	out := map[string]string{}
	for _, c := range children {
		data, _, err := o.conn.Get(path.Join(dir, c))
		if err != nil {
			continue
		}
		var f struct {
			Node    string `json:"node"`
			Version string `json:"version"`
			Kind    string `json:"kind"`
			Reason  string `json:"reason"`
		}
		if json.Unmarshal(data, &f) != nil || f.Node == "" {
			out[c] = "undecodable"
			continue
		}
		out[f.Node] = f.Kind + " " + f.Version + ": " + f.Reason
	}
	return out, nil
}
