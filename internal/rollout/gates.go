package rollout

import (
	"fmt"
	"sort"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Gate names, as metrics and logs label them.
const (
	GateWindow         = "window"
	GateMaxUnavailable = "maxUnavailable"
	GateDomain         = "domain"
	GateDomainQuorum   = "domainQuorum"
	GateCanary         = "canary"
	// GatePreStopCheck and GateAlert are asked by the deciding agent itself (nodeagent/veto),
	// after these: a node's own "not now", the deploy's Prometheus query returning series.
	GatePreStopCheck = "preStopCheck"
	GateAlert        = "alert"
)

// GateNames are every gate, as metrics export them.
var GateNames = []string{GateWindow, GateCanary, GateMaxUnavailable, GateDomain, GateDomainQuorum, GatePreStopCheck, GateAlert}

// Floor is an availability floor besides the service's quorum: at least Min of the nodes Of
// must have answered the roll call and stay online (a failure domain's quorum).
type Floor struct {
	Name string
	Min  int
	Of   map[string]bool
}

// AdmissibleFloors is Admissible under the service's quorum and every floor: the longest
// prefix of batch that leaves each of them standing.
func AdmissibleFloors(batch []Admitted, answered map[string]bool, minAvailable int, floors []Floor) int {
	k := Admissible(batch, answered, minAvailable)
	for _, f := range floors {
		in := map[string]bool{}
		for n := range answered {
			if f.Of[n] {
				in[n] = true
			}
		}
		k = min(k, Admissible(batch, in, f.Min))
	}
	return k
}

// Flight is a node admitted to upgrade and not back online, or one queued ready: with its
// failure domain ("" without a topology, or for a node without the label).
type Flight struct {
	Node, Domain string
}

// DomainOf is a node's failure domain under plan: its value of the topology key.
func DomainOf(plan *zklayout.Plan, labels map[string]string) string {
	if plan == nil || plan.Topology == nil {
		return ""
	}
	return labels[plan.Topology.Key]
}

// GateInput is what the gates beyond the quorum look at when a service's first waiter is about
// to decide. The agents and the operator's status fill it from the same reads.
type GateInput struct {
	Plan *zklayout.Plan
	Now  time.Time
	// Domain is the first waiter's failure domain.
	Domain string
	// InFlight are the nodes admitted ahead of the first waiter that are not back online
	// (their upgrading marks name their domains).
	InFlight []Flight
	// Queued are the ready nodes queued behind the first waiter for the target, in order.
	Queued []Flight
	// Online maps each online node to its domain.
	Online map[string]string
	// Target is the version the first waiter upgrades to (the canary phase applies to the
	// plan's version, not to a rollback), OnTarget the online nodes on it and when each
	// registered it.
	Target   string
	OnTarget map[string]time.Time
}

// GateResult is the gates' answer: Wait says why the first waiter may not go now ("" when it
// may), Gate which gate holds it.
type GateResult struct {
	Wait, Gate string
	// RetryAt is when a closed window opens (zero: wait for a change in ZooKeeper).
	RetryAt time.Time
	// Requeue: an earlier domain's nodes are queued behind the first waiter, and none of
	// another domain is in flight: the waiter goes to the back of the queue to let them pass.
	Requeue bool
	// Others caps how many nodes may go with the first waiter (-1: no cap), and Allowed how
	// many may be down at once once the nodes in flight are back (-1: no cap).
	Others, Allowed int
	// Floor is the first waiter's domain quorum, for the roll call (nil: none).
	Floor *Floor
}

// Window is the maintenance-window gate alone: "" when a node may start an upgrade at now.
func Window(plan *zklayout.Plan, now time.Time) (wait string, retryAt time.Time) {
	open, next, which := zklayout.InWindows(plan.Windows, now)
	if open {
		return "", time.Time{}
	}
	return zklayout.WindowWait(next, which, now), next
}

// Gates applies a plan's gates beyond the quorum (maintenance windows, maxUnavailable, failure
// domains) to the first waiter. Like the quorum check they are decided by the only node that
// may decide (the first waiter) from reads made after its predecessor's mark, and every node
// they count in flight was admitted by an earlier decision, whose mark the waiter read: a
// decision can only be more cautious than the state at its transaction (nodes in flight only
// come back). See docs/design.md, "Gates beyond the quorum".
func Gates(in GateInput) GateResult {
	r := GateResult{Others: -1, Allowed: -1}
	p := in.Plan
	if w, at := Window(p, in.Now); w != "" {
		r.Wait, r.Gate, r.RetryAt = w, GateWindow, at
		return r
	}
	if p.Canary > 0 && !p.Promoted && in.Target == p.Version {
		if done := canary(in, &r); done {
			return r
		}
	}
	if p.MaxUnavailable > 0 {
		if len(in.InFlight) >= p.MaxUnavailable {
			r.Wait, r.Gate = fmt.Sprintf("%d node(s) upgrading, maxUnavailable %d", len(in.InFlight), p.MaxUnavailable), GateMaxUnavailable
			return r
		}
		r.limit(p.MaxUnavailable-len(in.InFlight)-1, p.MaxUnavailable)
	}
	t := p.Topology
	if t == nil {
		return r
	}
	name := domainName(t, in.Domain)
	down := 0
	for _, f := range in.InFlight {
		if f.Domain != in.Domain {
			// One domain at a time: another's nodes are still upgrading.
			r.Wait, r.Gate = fmt.Sprintf("%s has %d node(s) down; one domain at a time", domainName(t, f.Domain), countIn(in.InFlight, f.Domain)), GateDomain
			return r
		}
		down++
	}
	for _, q := range in.Queued {
		// Domains go in the order of their names; once one has begun it finishes first (a
		// node of an earlier domain that staged late waits for it).
		if down == 0 && q.Domain < in.Domain {
			r.Wait, r.Gate, r.Requeue = fmt.Sprintf("%s goes before %s", domainName(t, q.Domain), name), GateDomain, true
			return r
		}
	}
	if down >= t.MaxUnavailablePerDomain {
		r.Wait, r.Gate = fmt.Sprintf("%s has %d node(s) down, maxUnavailablePerDomain %d", name, down, t.MaxUnavailablePerDomain), GateDomain
		return r
	}
	r.limit(t.MaxUnavailablePerDomain-down-1, t.MaxUnavailablePerDomain)
	if m := t.MinAvailableIn(in.Domain); m > 0 {
		of := map[string]bool{}
		for n, d := range in.Online {
			if d == in.Domain {
				of[n] = true
			}
		}
		// The first waiter is online and in the domain: it leaves len(of)-1.
		if len(of)-1 < m {
			r.Wait, r.Gate = fmt.Sprintf("%s has %d node(s) online, minAvailablePerDomain %d", name, len(of), m), GateDomainQuorum
			return r
		}
		r.Floor = &Floor{Name: name, Min: m, Of: of}
	}
	return r
}

// limit caps the nodes that may go with the first waiter to others, and those down at once to
// allowed.
func (r *GateResult) limit(others, allowed int) {
	if r.Others < 0 || others < r.Others {
		r.Others = others
	}
	if r.Allowed < 0 || allowed < r.Allowed {
		r.Allowed = allowed
	}
}

// canary applies the canary phase: until Canary nodes run the target (online on it or on
// their way), the batch is capped to the rest; then the service waits for its promotion, or,
// with a bake time, until the first Canary nodes on the target registered at least that long
// ago (each registering node's clock: they run NTP). It reports whether the first waiter must
// wait (r says why).
func canary(in GateInput, r *GateResult) bool {
	p := in.Plan
	up := len(in.OnTarget) + len(in.InFlight)
	if up < p.Canary {
		r.limit(p.Canary-up-1, p.Canary)
		return false
	}
	r.Gate = GateCanary
	if p.CanaryBakeSeconds == 0 {
		r.Wait = fmt.Sprintf("canary: %d node(s) on %s; waiting for kubectl rollkeeper promote %s", up, p.Version, p.Deploy)
		return true
	}
	if len(in.InFlight) > 0 || len(in.OnTarget) < p.Canary {
		r.Wait = fmt.Sprintf("canary: %d of %d canaries back on %s", len(in.OnTarget), p.Canary, p.Version)
		return true
	}
	since := make([]time.Time, 0, len(in.OnTarget))
	for _, t := range in.OnTarget {
		since = append(since, t)
	}
	sort.Slice(since, func(i, j int) bool { return since[i].Before(since[j]) })
	at := since[p.Canary-1].Add(time.Duration(p.CanaryBakeSeconds) * time.Second)
	if in.Now.Before(at) {
		r.Wait, r.RetryAt = fmt.Sprintf("canary: %d node(s) on %s, promoted at %s UTC if they stay healthy", p.Canary, p.Version, at.UTC().Format("15:04:05")), at
		return true
	}
	r.Gate = ""
	return false
}

func domainName(t *zklayout.Topology, d string) string {
	if d == "" {
		return fmt.Sprintf("the nodes without label %s", t.Key)
	}
	return d
}

func countIn(fs []Flight, domain string) int {
	n := 0
	for _, f := range fs {
		if f.Domain == domain {
			n++
		}
	}
	return n
}
