package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// The checker judges a run from what the fixtures logged (ground truth), what the observer saw
// in ZooKeeper and what the nemesis did. It imports nothing of the agent or the operator.

// window is a span in which the nemesis had a node down (killed, frozen or cut off): the node
// counts as down for the quorum invariant whatever its services did meanwhile.
type window struct {
	Node     string
	Fault    string
	From, To time.Time // To zero: until the end
}

// agentCrash is an agent SIGKILLed alone at At and started again at Restarted.
type agentCrash struct {
	Node          string
	At, Restarted time.Time
}

// stepRecord is one version change of the run.
type stepRecord struct {
	Index int
	// Target and Previous map each service to its version after and before the step.
	Target, Previous map[string]string
	// Unhealthy names the service whose target fails its health check ("" if none).
	Unhealthy  string
	Start, End time.Time
}

// result is one invariant's verdict on a run.
type result struct {
	Name     string
	Pass     bool
	Evidence []string
}

func (r result) String() string {
	v := "PASS"
	if !r.Pass {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s %s", v, r.Name)
	for i, e := range r.Evidence {
		if i == 12 {
			s += fmt.Sprintf("\n      ... %d more", len(r.Evidence)-i)
			break
		}
		s += "\n      " + e
	}
	return s
}

type checkInput struct {
	Services []string
	Quorum   map[string]int
	Deps     map[string][]string
	Nodes    []string
	Events   []fixtureEvent
	Windows  []window
	Crashes  []agentCrash
	Steps    []stepRecord
	Snaps    []snapshot
	// Rounds holds the roll call rounds the observer saw: service -> round -> start.
	Rounds map[string]map[int32]time.Time
	// From and To bound what is judged: from v1 being in place to the last check.
	From, To time.Time
	// MaxUnavailable and PerZone are the services' gates beyond the quorum (resolved), Zone
	// each node's zone.
	MaxUnavailable map[string]int
	PerZone        map[string]int
	Zone           map[string]string
}

func (in checkInput) downAt(node string, t time.Time) string {
	for _, w := range in.Windows {
		if w.Node == node && !t.Before(w.From) && (w.To.IsZero() || !t.After(w.To)) {
			return w.Fault
		}
	}
	return ""
}

// sortedEvents orders the events by time (a vanished instance at its last sight).
func sortedEvents(evs []fixtureEvent) []fixtureEvent {
	out := append([]fixtureEvent(nil), evs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// serving tracks which healthy instances run, per service and node.
type serving map[string]map[string]map[int]bool // svc -> node -> pid

func (s serving) apply(ev fixtureEvent) (wasHealthy bool) {
	if s[ev.Service] == nil {
		s[ev.Service] = map[string]map[int]bool{}
	}
	byNode := s[ev.Service]
	if byNode[ev.Node] == nil {
		byNode[ev.Node] = map[int]bool{}
	}
	switch ev.Event {
	case "serving":
		if ev.Healthy {
			byNode[ev.Node][ev.Pid] = true
		}
	case "stopped", "vanished":
		wasHealthy = byNode[ev.Node][ev.Pid]
		delete(byNode[ev.Node], ev.Pid)
	}
	return wasHealthy
}

// up lists the nodes with a healthy instance of svc, minus those skip rejects.
func (s serving) up(svc string, skip func(node string) bool) []string {
	var out []string
	for n, pids := range s[svc] {
		if len(pids) > 0 && (skip == nil || !skip(n)) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// checkQuorum: a voluntary stop (a fixture logging "stopped": asked by its agent, SIGTERM)
// never leaves fewer than the quorum of the service's other nodes serving healthy, counting
// the nodes the nemesis had down as down, except a node the nemesis downed after the roll call
// round the stopping node counted had started: that failure is concurrent with the decision,
// which no protocol can foresee (docs/design.md, "Roll call"). A node down before the round
// started is never excused, however recently it went down: that is the session-timeout
// window the roll call closes.
func checkQuorum(in checkInput) result {
	r := result{Name: "quorum: no voluntary stop below the quorum (nemesis-downed nodes count as down unless downed after the decision's roll call began)", Pass: true}
	st := serving{}
	stops, excusedStops := 0, 0
	events := sortedEvents(in.Events)
	for _, ev := range events {
		wasHealthy := st.apply(ev)
		if ev.Event != "stopped" || !wasHealthy || !ev.Time.After(in.From) || ev.Time.After(in.To) {
			continue
		}
		stops++
		up := st.up(ev.Service, func(n string) bool { return in.downAt(n, ev.Time) != "" })
		q := in.Quorum[ev.Service]
		if len(up) >= q {
			continue
		}
		// Too few by the stop's time: excuse the nodes downed after the round began.
		round, began, exact, ok := in.roundOf(ev)
		var excused []string
		if ok {
			for _, n := range in.Nodes {
				if n == ev.Node || contains(up, n) {
					continue
				}
				if w, downed := in.downedAfter(n, began, ev.Time); downed && healthyAt(events, ev.Service, n, began) && in.downAt(n, began) == "" {
					excused = append(excused, fmt.Sprintf("%s (%s from %s)", n, w.Fault, w.From.Format("15:04:05.000")))
				}
			}
		}
		if len(up)+len(excused) >= q {
			excusedStops++
			which := fmt.Sprintf("round %d", round)
			if in.markOf(ev) == 0 {
				which = fmt.Sprintf("the latest round that can have begun before it (%d; its mark not seen)", round)
			}
			r.Evidence = append(r.Evidence, fmt.Sprintf("%s: %d of quorum %d serving at the stop; concurrent with %s (began %s): %v",
				ev, len(up), q, which, began.Format("15:04:05.000"), excused))
			continue
		}
		r.Pass = false
		var downs []string
		for _, n := range in.Nodes {
			if f := in.downAt(n, ev.Time); f != "" {
				downs = append(downs, n+" ("+f+")")
			}
		}
		roundInfo := "no roll call round seen for this stop"
		switch {
		case ok && exact:
			roundInfo = fmt.Sprintf("round %d began %s", round, began.Format("15:04:05.000"))
		case ok && round == 0:
			roundInfo = fmt.Sprintf("a round missed by the observer began by %s", began.Format("15:04:05.000"))
		case ok:
			roundInfo = fmt.Sprintf("round %d began by %s (its start not seen)", round, began.Format("15:04:05.000"))
		}
		if ok && in.markOf(ev) == 0 {
			roundInfo = "its mark not seen, so the latest round that can have begun before it: " + roundInfo
		}
		r.Evidence = append(r.Evidence, fmt.Sprintf("%s: %d of quorum %d left serving %v; nemesis-down: %v; %s",
			ev, len(up), q, up, downs, roundInfo))
	}
	if r.Pass {
		r.Evidence = append(r.Evidence, fmt.Sprintf("%d voluntary stops checked (%d with a failure concurrent with the decision)", stops, excusedStops))
	}
	return r
}

// checkGates: at a voluntary stop, the nodes of the service still upgrading (stopped
// voluntarily, not serving healthy again) number fewer than its maxUnavailable, and with a
// zone topology they are all of the stopping node's zone and fewer than its per-zone limit.
// A node the nemesis downed (machine, agent, network) during its upgrade is not counted: its
// session may have ended, and its mark with it, so the gates count it no longer (a failure,
// like a crash for the quorum; docs/design.md, gates).
func checkGates(in checkInput) result {
	r := result{Name: "gates: no voluntary stop beyond maxUnavailable, never two zones at once, at most the per-zone limit", Pass: true}
	st := serving{}
	upgrading := map[string]map[string]time.Time{} // svc -> node -> its voluntary stop
	stops := 0
	for _, ev := range sortedEvents(in.Events) {
		wasHealthy := st.apply(ev)
		if upgrading[ev.Service] == nil {
			upgrading[ev.Service] = map[string]time.Time{}
		}
		switch {
		case ev.Event == "serving" && ev.Healthy, ev.Event == "vanished":
			delete(upgrading[ev.Service], ev.Node)
			continue
		case ev.Event != "stopped" || !wasHealthy:
			continue
		}
		voluntary := ev.Time
		mu, per := in.MaxUnavailable[ev.Service], in.PerZone[ev.Service]
		if !ev.Time.After(in.From) || ev.Time.After(in.To) || (mu == 0 && per == 0) {
			upgrading[ev.Service][ev.Node] = voluntary
			continue
		}
		stops++
		var others, otherZone []string
		for n, since := range upgrading[ev.Service] {
			if n == ev.Node || in.downAt(n, since) != "" {
				continue
			}
			if _, downed := in.downedAfter(n, since, ev.Time); downed {
				continue
			}
			others = append(others, n)
			if in.Zone[n] != in.Zone[ev.Node] {
				otherZone = append(otherZone, n)
			}
		}
		sort.Strings(others)
		switch {
		case mu > 0 && len(others)+1 > mu:
			r.Pass = false
			r.Evidence = append(r.Evidence, fmt.Sprintf("%s: %d other node(s) upgrading %v, maxUnavailable %d", ev, len(others), others, mu))
		case per > 0 && len(otherZone) > 0:
			r.Pass = false
			r.Evidence = append(r.Evidence, fmt.Sprintf("%s (%s): nodes of another zone upgrading %v", ev, in.Zone[ev.Node], otherZone))
		case per > 0 && len(others)+1 > per:
			r.Pass = false
			r.Evidence = append(r.Evidence, fmt.Sprintf("%s: %d other node(s) of %s upgrading %v, per-zone limit %d", ev, len(others), in.Zone[ev.Node], others, per))
		}
		upgrading[ev.Service][ev.Node] = voluntary
	}
	if r.Pass {
		r.Evidence = append(r.Evidence, fmt.Sprintf("%d voluntary stops of gated services checked", stops))
	}
	return r
}

// roundOf finds the roll call round the stopping node counted and when it began, or the
// latest time it can have begun. The round is the one the node's upgrading mark names in the
// last staging state seen at or before the stop (a state without the mark says: none, so an
// earlier step's mark never stands in), or, if that state has no mark (mark and stop fell
// between two reads), in the first state seen after the stop. A round whose start the
// observer missed began no later than the earliest later round it saw (rounds only grow), nor
// later than the stop: that bound stands in. A later start excuses fewer nodes, so the bound
// is never more lenient than the truth (exact says whether the start itself was seen).
func (in checkInput) roundOf(stop fixtureEvent) (round int32, began time.Time, exact, ok bool) {
	round = in.markOf(stop)
	if round == 0 {
		return in.latestRoundBefore(stop)
	}
	if t, seen := in.Rounds[stop.Service][round]; seen {
		return round, t, true, true
	}
	began = stop.Time
	for r, t := range in.Rounds[stop.Service] {
		if r > round && t.Before(began) {
			began = t
		}
	}
	return round, began, false, true
}

// markOf returns the round the stopping node's upgrading mark names (see roundOf); 0: the
// observer saw no mark for the stop.
func (in checkInput) markOf(stop fixtureEvent) (round int32) {
	for _, s := range in.Snaps {
		if s.Service != stop.Service || s.Kind != "staging" {
			continue
		}
		r := s.Rounds[stop.Node] // 0: no mark
		if !s.Time.After(stop.Time) {
			round = r
			continue
		}
		if round == 0 {
			round = r
		}
		break
	}
	return round
}

// latestRoundBefore stands in for the round of a stop whose upgrading mark the observer never
// saw (set and cleared between two of its reads: a busy machine delays them by a second and
// more, the time a fast upgrade takes). Whatever round the stop counted began before the stop,
// so the latest time at or before the stop at which any round of the service can have begun
// bounds its start from above: never more lenient than the truth. Round numbers are the znode's
// data versions, consecutive, so a gap between two rounds seen is a round missed, begun no
// later than the next one seen; rounds before the first seen, no later than it. The observer
// reads the znode until the run ends, so the last round is always seen. It returns round 0
// (unknown) and ok only when some round can have begun before the stop.
func (in checkInput) latestRoundBefore(stop fixtureEvent) (round int32, began time.Time, exact, ok bool) {
	seen := in.Rounds[stop.Service]
	rounds := make([]int32, 0, len(seen))
	for r := range seen {
		rounds = append(rounds, r)
	}
	slices.Sort(rounds)
	consider := func(r int32, t time.Time, isExact bool) {
		if t.After(stop.Time) {
			t = stop.Time // a missed round's bound past the stop: it began by the stop
			isExact = false
		}
		if !ok || t.After(began) {
			round, began, exact, ok = r, t, isExact, true
		}
	}
	prev, prevT := int32(0), time.Time{}
	for _, r := range rounds {
		t := seen[r]
		if r > prev+1 && (prev == 0 || !prevT.After(stop.Time)) {
			consider(0, t, false) // rounds prev+1..r-1 were missed: each began by t
		}
		if !t.After(stop.Time) {
			consider(r, t, true)
		}
		prev, prevT = r, t
	}
	if ok && !exact {
		round = 0
	}
	return round, began, exact, ok
}

// downedAfter reports a nemesis window of node that began in (t, until].
func (in checkInput) downedAfter(node string, t, until time.Time) (window, bool) {
	for _, w := range in.Windows {
		if w.Node == node && w.From.After(t.Add(time.Millisecond)) && !w.From.After(until) {
			return w, true
		}
	}
	return window{}, false
}

// healthyAt reports whether node had a healthy instance of svc serving at t.
func healthyAt(events []fixtureEvent, svc, node string, t time.Time) bool {
	st := serving{}
	for _, ev := range events {
		if ev.Time.After(t) {
			break
		}
		if ev.Service == svc && ev.Node == node {
			st.apply(ev)
		}
	}
	return len(st.up(svc, nil)) > 0
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkAgentCrashes: an agent crash stops no host service. Every instance serving on the node
// when its agent was SIGKILLed alone ends, if at all, by a voluntary stop ("stopped") of a
// later agent, after the restart; never by vanishing (killed), unless the nemesis crashed the
// whole machine then (kill-agent), and never by a stop while no agent ran.
func checkAgentCrashes(in checkInput) result {
	r := result{Name: "agent crash: the host services outlive a SIGKILLed agent", Pass: true}
	events := sortedEvents(in.Events)
	for _, c := range in.Crashes {
		st := serving{}
		for _, ev := range events {
			if ev.Time.After(c.At) {
				break
			}
			if ev.Node == c.Node {
				st.apply(ev)
			}
		}
		survivors := 0
		for svc, byNode := range st {
			for pid := range byNode[c.Node] {
				end := "still serving at the end"
				for _, ev := range events {
					if ev.Pid != pid || ev.Node != c.Node || ev.Service != svc || !ev.Time.After(c.At) || (ev.Event != "stopped" && ev.Event != "vanished") {
						continue
					}
					switch {
					case ev.Event == "vanished" && !in.machineCrashed(c.Node, ev.Time, ev.Detected):
						r.Pass = false
						end = "KILLED"
					case ev.Event == "stopped" && ev.Time.Before(c.Restarted):
						r.Pass = false
						end = "STOPPED while no agent ran"
					default:
						end = ev.Event
					}
					end += " at " + ev.Time.Format("15:04:05.000")
					break
				}
				survivors++
				r.Evidence = append(r.Evidence, fmt.Sprintf("%s: agent SIGKILLed %s, restarted %s: %s pid %d %s",
					c.Node, c.At.Format("15:04:05.000"), c.Restarted.Format("15:04:05.000"), svc, pid, end))
			}
		}
		if survivors == 0 {
			r.Evidence = append(r.Evidence, fmt.Sprintf("%s: no host service served when its agent was SIGKILLed at %s", c.Node, c.At.Format("15:04:05.000")))
		}
	}
	return r
}

// machineCrashed reports whether the nemesis crashed node's whole machine (kill-agent) at some
// time in [lastSeen, detected]: a vanished process is dated when last seen alive, which may be
// just before the crash began.
func (in checkInput) machineCrashed(node string, lastSeen, detected time.Time) bool {
	if detected.Before(lastSeen) {
		detected = lastSeen
	}
	for _, w := range in.Windows {
		if w.Node == node && w.Fault == faultKillAgent && !w.From.After(detected) && (w.To.IsZero() || !w.To.Before(lastSeen)) {
			return true
		}
	}
	return false
}

// dip is a span in which fewer healthy instances of a service served than its quorum, by
// ground truth alone (nemesis or not).
type dip struct {
	Service  string
	From, To time.Time
	Min      int
	Quorum   int
	Cause    string
}

// findDips lists the spans below quorum between in.From and in.To.
func findDips(in checkInput) []dip {
	st := serving{}
	var out []dip
	open := map[string]*dip{}
	for _, ev := range sortedEvents(in.Events) {
		st.apply(ev)
		if !ev.Time.After(in.From) || ev.Time.After(in.To) {
			continue
		}
		svc := ev.Service
		n := len(st.up(svc, nil))
		q := in.Quorum[svc]
		if d := open[svc]; d != nil {
			if n >= q {
				d.To = ev.Time
				out = append(out, *d)
				delete(open, svc)
			} else if n < d.Min {
				d.Min = n
			}
			continue
		}
		if n < q {
			open[svc] = &dip{Service: svc, From: ev.Time, Min: n, Quorum: q, Cause: ev.String()}
		}
	}
	for _, d := range open {
		d.To = in.To
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From.Before(out[j].From) })
	return out
}

// checkOrder: in every step, the dependent service D stops no node before each service it
// depends on was complete on the step's target (as the observer saw current/ and staging/: at
// least max(1, quorum) nodes registered, all on the target, none upgrading); when a service it
// depends on (directly or not) halts on an unhealthy version, D stops no node at all.
func checkOrder(in checkInput, dependent string) result {
	r := result{Name: fmt.Sprintf("order: %s never stops before %s are complete", dependent, strings.Join(in.Deps[dependent], " and ")), Pass: true}
	for _, step := range in.Steps {
		if step.Target[dependent] == step.Previous[dependent] {
			continue
		}
		var firstStop *fixtureEvent
		for _, ev := range sortedEvents(in.Events) {
			if ev.Service == dependent && ev.Event == "stopped" && ev.Time.After(step.Start) && !ev.Time.After(step.End) {
				firstStop = &ev
				break
			}
		}
		if firstStop == nil {
			r.Evidence = append(r.Evidence, fmt.Sprintf("step %d: %s stopped no node", step.Index, dependent))
			continue
		}
		if blocked := upstreamOf(in.Deps, dependent, step.Unhealthy); blocked {
			r.Pass = false
			r.Evidence = append(r.Evidence, fmt.Sprintf("step %d: %s halts on unhealthy %s, yet %s", step.Index, step.Unhealthy, step.Target[step.Unhealthy], firstStop))
			continue
		}
		for _, dep := range in.Deps[dependent] {
			at, ok := completeAt(in, dep, step.Target[dep], step.Start, firstStop.Time)
			if !ok {
				r.Pass = false
				r.Evidence = append(r.Evidence, fmt.Sprintf("step %d: %s before %s was seen complete on %s; %s at that time: current %s staging %s",
					step.Index, firstStop, dep, step.Target[dep], dep, formatMembers(membersAt(in.Snaps, dep, "current", firstStop.Time)),
					formatMembers(membersAt(in.Snaps, dep, "staging", firstStop.Time))))
				continue
			}
			r.Evidence = append(r.Evidence, fmt.Sprintf("step %d: %s complete at %s, %s first stop at %s",
				step.Index, dep, at.Format("15:04:05.000"), dependent, firstStop.Time.Format("15:04:05.000")))
		}
	}
	return r
}

// upstreamOf reports whether svc depends on bad, directly or not.
func upstreamOf(deps map[string][]string, svc, bad string) bool {
	if bad == "" {
		return false
	}
	for _, d := range deps[svc] {
		if d == bad || upstreamOf(deps, d, bad) {
			return true
		}
	}
	return false
}

// completeAt finds the first time in [from, to] the observer saw svc complete on version.
func completeAt(in checkInput, svc, version string, from, to time.Time) (time.Time, bool) {
	var cur, stg map[string]string
	need := max(1, in.Quorum[svc])
	for _, s := range in.Snaps {
		if s.Service != svc {
			continue
		}
		if s.Time.After(to) {
			break
		}
		if s.Kind == "current" {
			cur = s.Members
		} else {
			stg = s.Members
		}
		if s.Time.Before(from) || cur == nil {
			continue
		}
		ok := len(cur) >= need && len(upgrading(stg)) == 0
		for _, v := range cur {
			ok = ok && v == version
		}
		if ok {
			return s.Time, true
		}
	}
	return time.Time{}, false
}

func membersAt(snaps []snapshot, svc, kind string, t time.Time) map[string]string {
	var m map[string]string
	for _, s := range snaps {
		if s.Time.After(t) {
			break
		}
		if s.Service == svc && s.Kind == kind {
			m = s.Members
		}
	}
	return m
}

func formatMembers(m map[string]string) string {
	if m == nil {
		return "(none seen)"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(k + "=" + m[k])
	}
	b.WriteString("}")
	return b.String()
}
