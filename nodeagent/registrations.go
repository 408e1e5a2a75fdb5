package nodeagent

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// registration is what one child of current/<svc> said when it was read.
type registration struct {
	// bad says why the child never counts whatever the plan (invalid name, malformed payload,
	// payload naming another node, gone before it could be read); "" when it is well-formed.
	bad     string
	version string
	labels  labels.Set
}

// registrations caches the children of current/<svc> by name, so that a decision reads only
// the registrations that appeared since the previous listing.
//
// Why the cache is sound: agents only ever create and delete registrations, never set them
// (register replaces one by delete and create), so a name's payload can change only if the
// name is deleted and created again. Every create and delete under current/<svc> bumps its
// cversion by one, and a listing returns the names and the cversion together. If the cversion
// moved by exactly the number of names that appeared plus those that went, no name was
// replaced in between, and every cached entry still describes the child of that name; if it
// moved by more, some name came back under the cache's feet, and everything is read again. A
// payload rewritten in place (a hand-made set, never done by rollkeeper) is not noticed until
// the name is recreated.
type registrations struct {
	listed   bool
	cversion int32
	entries  map[string]registration
	// reported is the reason each child was last logged for not counting (once per reason).
	reported map[string]string
}

// online maps each node that counts as online for the service to its version. A registration
// counts only if its name is a valid node name, its payload decodes and names that node, and
// its labels match the plan's selector (no plan: every well-formed registration counts). So a
// stray, malformed or foreign znode never stands in for a running node: the count is
// conservative. The quorum check, the distribution gate, completion and the choice of the most
// popular version all count through here. watch keeps a child watch on current/<svc>.
func (w *worker) online(ctx context.Context, plan *zklayout.Plan, watch bool) (map[string]string, error) {
	sel := labels.Everything()
	if plan != nil && plan.Selector != "" {
		s, err := labels.Parse(plan.Selector)
		if err != nil {
			// step refuses such a plan before anything counts; count nobody rather than everybody.
			return map[string]string{}, nil
		}
		sel = s
	}
	p := w.l.CurrentService(w.svc)
	names, st, err := w.childrenStat(ctx, p, watch)
	if errors.Is(err, zkclient.ErrNoNode) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	c := &w.regs
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
	if c.listed && st.CVersion != c.cversion+int32(changed) {
		// A name was replaced (or came and went) since the last listing: read all again.
		clear(c.entries)
	}
	c.listed, c.cversion = true, st.CVersion
	for n := range c.reported {
		if !present[n] {
			delete(c.reported, n)
		}
	}

	out := make(map[string]string, len(names))
	for _, n := range names {
		r, ok := c.entries[n]
		if !ok {
			if r, err = w.readRegistration(ctx, n); err != nil {
				// Names left unread would pass for new ones next time and could mask a
				// replacement in the cversion arithmetic: start from scratch then.
				c.listed = false
				clear(c.entries)
				return nil, err
			}
			c.entries[n] = r
		}
		why := r.bad
		if why == "" && !sel.Matches(r.labels) {
			why = fmt.Sprintf("node not selected by the plan (selector %q, labels %v)", plan.Selector, r.labels)
		}
		if why != "" {
			if c.reported[n] != why && r.bad != "gone" {
				w.log.Info("registration does not count as an online node", "znode", w.l.CurrentNode(w.svc, n), "why", why)
			}
			c.reported[n] = why
			continue
		}
		delete(c.reported, n)
		out[n] = r.version
	}
	return out, nil
}

// readRegistration reads and judges current/<svc>/<name>.
func (w *worker) readRegistration(ctx context.Context, name string) (registration, error) {
	if err := zklayout.ValidNode(name); err != nil {
		return registration{bad: "not a valid node name"}, nil
	}
	data, _, err := w.zk.Get(ctx, w.l.CurrentNode(w.svc, name))
	if errors.Is(err, zkclient.ErrNoNode) {
		// Deleted since the listing; if the name is listed again, it was recreated, which the
		// cversion check notices.
		return registration{bad: "gone"}, nil
	}
	if err != nil {
		return registration{}, fmt.Errorf("read registration %s: %w", name, err)
	}
	var c zklayout.Current
	if err := zklayout.Decode(data, &c); err != nil {
		return registration{bad: "malformed: " + err.Error()}, nil
	}
	if c.Node != name {
		return registration{bad: fmt.Sprintf("payload names node %q", c.Node)}, nil
	}
	return registration{version: c.Version, labels: labels.Set(c.Labels)}, nil
}

// childrenStat lists p's children with p's stat; with watch it keeps a child watch on p.
func (w *worker) childrenStat(ctx context.Context, p string, watch bool) ([]string, zkclient.Stat, error) {
	if _, ok := w.armed["children:"+p]; ok || !watch {
		return w.zk.Children(ctx, p)
	}
	c, st, wt, err := w.zk.ChildrenW(ctx, p)
	if err == nil {
		w.armed["children:"+p] = wt
	}
	return c, st, err
}
