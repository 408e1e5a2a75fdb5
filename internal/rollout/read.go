package rollout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Client is the part of a ZooKeeper client a Reader uses: plain reads, no watches (the caller
// arms the watches a step names, see Watch). *zkclient.Client implements it, and so does the
// simulation's model.
type Client interface {
	Get(ctx context.Context, p string) ([]byte, zkclient.Stat, error)
	Children(ctx context.Context, p string) ([]string, zkclient.Stat, error)
}

// Verifier checks a signed znode's data (sigPath is what the signature binds) and decodes it.
// refused says the error is about the signature (see Snapshot.Refused), not the payload.
type Verifier func(sigPath string, data []byte, into zklayout.Payload) (refused bool, err error)

// Reader reads snapshots of one service. It is the one reader of the protocol's state: the
// agent reads through it before each step. It caches registrations (see registrations), so it
// is used by one goroutine at a time.
type Reader struct {
	ZK      Client
	Layout  zklayout.Layout
	Service string
	// Node is the reading node: of the staging queue only its own children and those ahead of
	// them are read. Empty: every child is read.
	Node string
	// Verify checks signed znodes (plan, deploy entries); nil decodes them unsigned.
	Verify Verifier

	regs registrations
	// queued are the staging children of the previous read, in queue order; left the nodes
	// whose children have left the queue since the previous listing of current/<svc> (a set:
	// it may hold a node per registration; see ReadCurrent).
	queued []zklayout.SeqName
	left   map[string]bool
}

// NewReader returns a reader of svc's state for node (empty: every staging child is read).
func NewReader(zk Client, l zklayout.Layout, svc, node string, verify Verifier) *Reader {
	return &Reader{ZK: zk, Layout: l, Service: svc, Node: node, Verify: verify}
}

func statOf(st zkclient.Stat) Stat {
	return Stat{Exists: true, Version: st.Version, CVersion: st.CVersion}
}

// Read reads a snapshot with the parts need names (a reader without a Node reads them all).
func (r *Reader) Read(ctx context.Context, need Need) (*Snapshot, error) {
	if r.Node == "" {
		// Without a node: the whole queue and every registration (the deploy queue if asked).
		need |= NeedCurrent | NeedQueue
	}
	s := &Snapshot{Service: r.Service, Layout: r.Layout}
	l, svc := r.Layout, r.Service
	pp := l.StagingService(svc)
	data, st, err := r.ZK.Get(ctx, pp)
	switch {
	case errors.Is(err, zkclient.ErrNoNode):
	case err != nil:
		return nil, err
	case len(bytes.TrimSpace(data)) == 0:
		// An empty staging/<svc> (someone made the path) is a missing plan, not a bad one.
		s.PlanStat = statOf(st)
	default:
		s.PlanStat = statOf(st)
		var p zklayout.Plan
		if err := r.decode(s, pp, pp, "", data, &p); err != nil {
			s.PlanBad = err
		} else {
			s.Plan = &p
		}
	}
	if s.PlanStat.Exists {
		if err := r.readQueue(ctx, s); err != nil {
			return nil, err
		}
	}
	if err := r.more(ctx, s, need&^NeedCurrent); err != nil {
		return nil, err
	}
	if need&NeedCurrent != 0 {
		if err := r.more(ctx, s, NeedCurrent); err != nil {
			return nil, err
		}
	} else if r.Node != "" {
		if err := r.readOwn(ctx, s); err != nil {
			return nil, err
		}
	}
	if err := r.readFailures(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// ReadMore adds the parts need names to a snapshot Read left them out of. The order of the
// reads still holds: what it adds is read after the staging queue was listed.
func (r *Reader) ReadMore(ctx context.Context, s *Snapshot, need Need) error {
	return r.more(ctx, s, need&^s.Have)
}

func (r *Reader) more(ctx context.Context, s *Snapshot, need Need) error {
	if need&(NeedQueue|NeedTail|NeedBatch) != 0 {
		if err := r.loadQueue(ctx, s, need); err != nil {
			return err
		}
	}
	if need&NeedDeploy != 0 {
		if err := r.readDeploy(ctx, s); err != nil {
			return err
		}
	}
	if need&NeedSample != 0 && need&NeedCurrent == 0 && s.Have&NeedCurrent == 0 {
		if err := r.readSample(ctx, s); err != nil {
			return err
		}
	}
	if need&NeedDesignated != 0 && need&NeedCurrent == 0 && s.Have&NeedCurrent == 0 {
		if err := r.readDesignated(ctx, s); err != nil {
			return err
		}
	}
	if need&NeedCurrent != 0 {
		var err error
		if s.Current, s.CurrentStat, err = r.ReadCurrent(ctx); err != nil {
			return err
		}
		s.Own = nil
		for i := range s.Current {
			if s.Current[i].Node == r.Node {
				s.Own = &s.Current[i]
			}
		}
		s.OwnRead = r.Node != ""
	}
	s.Have |= need
	return nil
}

func (r *Reader) decode(s *Snapshot, p, sigPath, version string, data []byte, into zklayout.Payload) error {
	if r.Verify == nil {
		return zklayout.Decode(data, into)
	}
	refused, err := r.Verify(sigPath, data, into)
	if err != nil && refused {
		if p != sigPath {
			err = fmt.Errorf("znode %s: %w", p, err)
		}
		s.Refused = append(s.Refused, Refusal{Znode: p, Version: version, Err: err})
	}
	return err
}

func (r *Reader) readQueue(ctx context.Context, s *Snapshot) error {
	l, svc := r.Layout, r.Service
	names, st, err := r.ZK.Children(ctx, l.StagingService(svc))
	if errors.Is(err, zkclient.ErrNoNode) {
		s.PlanStat = Stat{}
		return nil
	}
	if err != nil {
		return err
	}
	s.PlanStat.CVersion = st.CVersion
	seqs, bad := zklayout.SortSeq(names)
	r.noteQueue(seqs)
	s.BadStaging = bad
	s.Queue = make([]QueueEntry, len(seqs))
	for i, q := range seqs {
		// Field by field: an entry is large, and every agent lists the whole queue per step.
		e := &s.Queue[i]
		e.Child, e.Node, e.Seq = q.Child, q.Name, q.Seq
	}
	// The node's own children, and the entries ahead of each back to the first an agent made
	// (a persistent one is skipped by the decision, so the one before it counts).
	for i := len(s.Queue) - 1; i >= 0; i-- {
		if s.Queue[i].Node == r.Node && r.Node != "" {
			if err := r.loadStaged(ctx, &s.Queue[i]); err != nil {
				return err
			}
			if err := r.loadBack(ctx, s, i-1); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadQueue loads the staging children need names: all (NeedQueue), those from the head to
// MaxAdmit-1 behind the reading node's own (NeedBatch), and the last an agent made (NeedTail).
func (r *Reader) loadQueue(ctx context.Context, s *Snapshot, need Need) error {
	end := 0
	switch {
	case need&NeedQueue != 0 || (need&NeedBatch != 0 && r.Node == ""):
		end = len(s.Queue)
	case need&NeedBatch != 0:
		own := -1
		for i, q := range s.Queue {
			if q.Node == r.Node {
				own = i
			}
		}
		end = min(len(s.Queue), own+MaxAdmit)
	}
	for i := range s.Queue[:end] {
		if err := r.loadStaged(ctx, &s.Queue[i]); err != nil {
			return err
		}
	}
	if need&NeedTail != 0 {
		return r.loadBack(ctx, s, len(s.Queue)-1)
	}
	return nil
}

// loadBack loads the staging children from i back to the first an agent made (live, ephemeral).
func (r *Reader) loadBack(ctx context.Context, s *Snapshot, i int) error {
	for ; i >= 0; i-- {
		q := &s.Queue[i]
		if err := r.loadStaged(ctx, q); err != nil {
			return err
		}
		if !q.Gone && q.Owner != 0 {
			return nil
		}
	}
	return nil
}

// noteQueue records the staging children now listed (in queue order), and adds the nodes
// whose children left to those ReadCurrent reads first. Counters only grow, so both listings
// are in counter order and one merge finds the children that left: every agent notes every
// listing of the queue, so this stays linear (no map of the listing per read).
func (r *Reader) noteQueue(seqs []zklayout.SeqName) {
	if r.left == nil {
		r.left = map[string]bool{}
	}
	j := 0
	for _, old := range r.queued {
		for j < len(seqs) && seqs[j].Seq < old.Seq {
			j++
		}
		if j < len(seqs) && seqs[j].Seq == old.Seq && seqs[j].Child == old.Child {
			continue
		}
		r.left[old.Name] = true
	}
	r.queued = seqs
}

func (r *Reader) loadStaged(ctx context.Context, q *QueueEntry) error {
	if q.Loaded {
		return nil
	}
	data, st, err := r.ZK.Get(ctx, r.Layout.StagingChild(r.Service, q.Child))
	q.Loaded = true
	switch {
	case errors.Is(err, zkclient.ErrNoNode):
		q.Gone = true
		return nil
	case err != nil:
		return err
	}
	q.Owner, q.Version = st.EphemeralOwner, st.Version
	if derr := zklayout.Decode(data, &q.Staged); derr != nil {
		q.Bad = derr
	}
	return nil
}

// readOwn reads the reading node's registration alone.
func (r *Reader) readOwn(ctx context.Context, s *Snapshot) error {
	reg, err := r.readRegistration(ctx, r.Node)
	if err != nil {
		return err
	}
	s.OwnRead = true
	if reg.Bad != "gone" {
		s.Own = &reg.Registration
	}
	return nil
}

func (r *Reader) readDeploy(ctx context.Context, s *Snapshot) error {
	l := r.Layout
	names, st, err := r.ZK.Children(ctx, l.Deploy())
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	s.DeployStat = statOf(st)
	seqs, _ := zklayout.SortSeq(names)
	for i, q := range seqs {
		d := DeployView{Child: q.Child, Service: q.Name, Seq: q.Seq}
		if i == 0 || q.Name == r.Service {
			d.Loaded = true
			ep := l.DeployEntry(q.Child)
			data, st, err := r.ZK.Get(ctx, ep)
			switch {
			case errors.Is(err, zkclient.ErrNoNode):
				d.Gone = true
			case err != nil:
				return err
			default:
				d.Version = st.Version
				version := ""
				if s.Plan != nil {
					version = s.Plan.Version
				}
				// An entry's signature binds its service's prefix (ZooKeeper picks the counter).
				d.Bad = r.decode(s, ep, l.DeployPrefix(q.Name), version, data, &d.Entry)
			}
		}
		s.Deploy = append(s.Deploy, d)
	}
	return nil
}

// ReadCurrent reads the service's registrations (current/<svc>), in name order.
func (r *Reader) ReadCurrent(ctx context.Context) ([]Registration, Stat, error) {
	p := r.Layout.CurrentService(r.Service)
	names, st, err := r.ZK.Children(ctx, p)
	if errors.Is(err, zkclient.ErrNoNode) {
		r.regs = registrations{}
		return nil, Stat{}, nil
	}
	if err != nil {
		return nil, Stat{}, err
	}
	c := &r.regs
	if c.entries == nil {
		c.entries = map[string]cachedRegistration{}
	}
	present := make(map[string]bool, len(names))
	changed := 0
	for _, n := range names {
		present[n] = true
		if _, ok := c.entries[n]; !ok {
			changed++
		}
	}
	for n := range c.entries {
		if !present[n] {
			changed++
			delete(c.entries, n)
		}
	}
	if surplus := st.CVersion - c.cversion - int32(changed); c.listed && surplus != 0 {
		// Some names were replaced (deleted and created again) since the last listing, two
		// changes each. Likely ones first: a node that finished an upgrade since (its staging
		// child left the queue) registered again. Each is confirmed by its creation zxid;
		// if they do not account for the whole surplus, everything is read again.
		if !r.revalidate(ctx, c, surplus/2) {
			clear(c.entries)
		}
	}
	c.listed, c.cversion = true, st.CVersion
	clear(r.left)
	sort.Strings(names)
	out := make([]Registration, 0, len(names))
	for _, n := range names {
		e, ok := c.entries[n]
		if !ok {
			if e, err = r.readRegistration(ctx, n); err != nil {
				// Names left unread would pass for new ones next time and could mask a
				// replacement in the cversion arithmetic: start from scratch then.
				c.listed = false
				clear(c.entries)
				return nil, Stat{}, err
			}
			c.entries[n] = e
		}
		out = append(out, e.Registration)
	}
	return out, statOf(st), nil
}

// listCurrent lists current/<svc>'s children; none (and a zero stat) when it is missing.
func (r *Reader) listCurrent(ctx context.Context) ([]string, Stat, error) {
	names, st, err := r.ZK.Children(ctx, r.Layout.CurrentService(r.Service))
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil, Stat{}, nil
	}
	if err != nil {
		return nil, Stat{}, err
	}
	return names, statOf(st), nil
}

// readDesignated lists current/<svc> and reads its registrations in name order until one
// counts (Designated), at most MaxDesignateReads of them.
func (r *Reader) readDesignated(ctx context.Context, s *Snapshot) error {
	names, _, err := r.listCurrent(ctx)
	if err != nil {
		return err
	}
	sort.Strings(names)
	s.Designated = nil
	for i, n := range names {
		if i == MaxDesignateReads {
			break
		}
		e, err := r.readRegistration(ctx, n)
		if err != nil {
			return err
		}
		if designates(e.Registration, s.Plan) {
			s.Designated = &e.Registration
			return nil
		}
	}
	return nil
}

// readSample lists current/<svc> and reads a random sample of its registrations, at most
// MaxSample, the reading node's own left out (Sample).
func (r *Reader) readSample(ctx context.Context, s *Snapshot) error {
	names, st, err := r.listCurrent(ctx)
	if err != nil {
		return err
	}
	s.CurrentStat = st
	names = slices.DeleteFunc(names, func(n string) bool { return n == r.Node })
	if len(names) > MaxSample {
		rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		names = names[:MaxSample]
	}
	sort.Strings(names)
	s.Sample = s.Sample[:0]
	for _, n := range names {
		e, err := r.readRegistration(ctx, n)
		if err != nil {
			return err
		}
		s.Sample = append(s.Sample, e.Registration)
	}
	return nil
}

// designates reports whether a registration may be the designated completer: it counts, and
// an agent made it (a persistent one, made by hand, has no agent to act).
func designates(r Registration, plan *zklayout.Plan) bool {
	if r.Owner == 0 {
		return false
	}
	online, _ := Online([]Registration{r}, plan)
	return len(online) == 1
}

// revalidate reads again the cached registrations of the nodes whose staging child left the
// queue since the previous read, and reports whether they account for all of want
// replacements (their creation zxid changed). Those read are updated in the cache either way.
func (r *Reader) revalidate(ctx context.Context, c *registrations, want int32) bool {
	var found int32
	// In name order, so that a run is the same every time (the simulation replays seeds).
	for _, n := range slices.Sorted(maps.Keys(r.left)) {
		if found == want {
			// Every replacement is accounted for: the other names were not replaced.
			break
		}
		old, ok := c.entries[n]
		if !ok {
			continue
		}
		e, err := r.readRegistration(ctx, n)
		if err != nil {
			return false
		}
		if e.czxid != old.czxid {
			found++
		}
		c.entries[n] = e
	}
	return found == want
}

// registrations caches the children of current/<svc> by name, so that a read fetches only the
// registrations that changed since the previous listing.
//
// Why the cache is sound: agents only ever create and delete registrations, never set them
// (a replacement is a delete and a create), so a name's payload can change only if the name is
// deleted and created again. Every create and delete under current/<svc> bumps its cversion
// by one, and a listing returns the names and the cversion together. If the cversion moved by
// exactly the number of names that appeared plus those that went, no name was replaced in
// between, and every cached entry still describes the child of that name. If it moved by more,
// the surplus counts the replacements (two changes each): those confirmed by a new creation
// zxid are read again, and unless they make up the whole surplus, everything is. A payload
// rewritten in place (a hand-made set, never done by rollkeeper) is not noticed until the name
// is recreated.
type registrations struct {
	listed   bool
	cversion int32
	entries  map[string]cachedRegistration
}

// cachedRegistration is a registration with the zxid that created its znode.
type cachedRegistration struct {
	Registration
	czxid int64
}

// readRegistration reads and judges current/<svc>/<name>.
func (r *Reader) readRegistration(ctx context.Context, name string) (cachedRegistration, error) {
	reg := Registration{Node: name}
	if err := zklayout.ValidNode(name); err != nil {
		reg.Bad = badName
		return cachedRegistration{Registration: reg}, nil
	}
	data, st, err := r.ZK.Get(ctx, r.Layout.CurrentNode(r.Service, name))
	if errors.Is(err, zkclient.ErrNoNode) {
		// Deleted since the listing; if the name is listed again, it was recreated, which the
		// cversion check notices.
		reg.Bad = "gone"
		return cachedRegistration{Registration: reg}, nil
	}
	if err != nil {
		return cachedRegistration{}, fmt.Errorf("read registration %s: %w", name, err)
	}
	reg.Owner = st.EphemeralOwner
	var c zklayout.Current
	switch err := zklayout.Decode(data, &c); {
	case err != nil:
		reg.Bad = "malformed: " + err.Error()
	case c.Node != name:
		reg.Bad = fmt.Sprintf("payload names node %q", c.Node)
	default:
		reg.Version, reg.Labels, reg.Address, reg.Since = c.Version, c.Labels, c.Address, c.Since
	}
	return cachedRegistration{Registration: reg, czxid: st.Czxid}, nil
}

func (r *Reader) readFailures(ctx context.Context, s *Snapshot) error {
	l, svc := r.Layout, r.Service
	names, st, err := r.ZK.Children(ctx, l.FailureService(svc))
	if errors.Is(err, zkclient.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	// The data version comes from the same listing's stat: a record written after it bumps it,
	// and a decision checking this version then fails.
	s.FailuresStat = statOf(st)
	sort.Strings(names)
	for _, n := range names {
		data, _, err := r.ZK.Get(ctx, l.Failure(svc, n))
		if errors.Is(err, zkclient.ErrNoNode) {
			continue
		}
		if err != nil {
			return err
		}
		var f zklayout.Failure
		if err := zklayout.Decode(data, &f); err != nil {
			s.BadFailures = append(s.BadFailures, fmt.Sprintf("%s: %v", n, err))
			continue
		}
		if f.Node != n {
			// Agents record failures under their own name; a record naming another node was
			// not written by it.
			s.BadFailures = append(s.BadFailures, fmt.Sprintf("%s: names node %q", n, f.Node))
			continue
		}
		s.Failures = append(s.Failures, f)
	}
	return nil
}
