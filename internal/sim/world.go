package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zkmodel"
)

// Mutation breaks one protocol rule on purpose (tests only: it proves the invariants bite).
type Mutation int

const (
	// MutateNone runs the protocol as written.
	MutateNone Mutation = iota
	// MutateMinAvailable makes every agent tell Next (and its roll call) that the plan's
	// minAvailable is 0.
	MutateMinAvailable
	// MutateSkipRollCall makes the decider skip the roll call (every registration counts).
	MutateSkipRollCall
	// MutateSkipFailureCheck drops the check of failures/<svc>'s version from the decision's
	// transaction.
	MutateSkipFailureCheck
	// MutateIgnoreQueue makes every agent see only its own service's deploy entries (as if it
	// headed the queue).
	MutateIgnoreQueue
	// MutateAdmitAll makes a decider admit its whole batch whatever the roll call's answers
	// leave (the batch still comes from Next, sized by the registrations).
	MutateAdmitAll
	// MutateIgnoreGates makes every agent tell Next that the plan has neither maxUnavailable
	// nor a topology.
	MutateIgnoreGates
	// MutateIgnoreCanary makes every agent tell Next that the plan has no canary phase.
	MutateIgnoreCanary
	// MutateShortBake makes every agent tell Next that the canaries bake one second.
	MutateShortBake
)

// Config tunes a run; the zero value is the default.
type Config struct {
	// MaxSteps bounds the scheduler's events (0: 4000).
	MaxSteps int
	// Faults is the fault budget (0: drawn from the seed, 0..4; -1: none).
	Faults int
	// KeepTrace keeps the whole trace in the Result (otherwise its last 60 lines on failure).
	KeepTrace bool
	// Mutate breaks a rule (tests only).
	Mutate Mutation
}

// Result is one run's outcome.
type Result struct {
	Seed  int64
	Steps int
	// Err is the first invariant violated (nil: the run passed).
	Err error
	// Trace is every event in order, one line each (see Config.KeepTrace).
	Trace []string
	// Summary describes the world drawn from the seed.
	Summary string
	// Findings are protocol behaviours the run met that are not invariant violations but
	// worth knowing (see the package comment): each a short tag.
	Findings []string
	// Counts says how often interesting things happened (faults, stops, lost turns...).
	Counts map[string]int
}

const (
	v1 = "v1"
	v2 = "v2"
)

type service struct {
	idx    int
	name   string
	min    int
	policy string
	plan   zklayout.Plan
	// completed: an agent removed the service's last deploy entry while its rollout was
	// complete by ground truth (invariant 2 lets dependents stop only after that).
	completed bool
	// opReader is the operator's reader of the service (it caches registrations).
	opReader *rollout.Reader
	// roundStart is the tick each roll call round began (the quorum invariant judges an
	// admitted node's stop against its admission's round).
	roundStart map[int32]int
}

type proc struct {
	running  bool
	healthy  bool
	version  string
	current  string
	previous string
	inst     map[string]bool
	// badFirst: the first start of v2 here fails its health check (then it is consumed).
	badFirst bool
	// lastFault is the tick of the last fault that took this process or its registration
	// down (machine crash, session end).
	lastFault int
	// servedAt is the tick of the process's last start (healthy or not: read with healthy).
	servedAt int
}

func (p *proc) start(v string, tick int) bool {
	p.running, p.version, p.servedAt = true, v, tick
	p.healthy = true
	if v == v2 && p.badFirst {
		p.badFirst = false
		p.healthy = false
	}
	return p.healthy
}

type machine struct {
	idx    int
	name   string
	labels map[string]string
	up     bool
	// agentUp: the agent process runs (it acts and answers roll calls).
	agentUp    bool
	backAt     int // machine down: when it comes back
	agentAt    int // agent down: when it restarts
	session    zkmodel.SessionID
	procs      []*proc
	workers    []*worker
	answerers  []*answerer
	watchOwner map[zkmodel.WatchID]watchRef
}

type watchRef struct {
	svc      int
	answerer bool
	key      string
}

type lingering struct {
	s        zkmodel.SessionID
	m        int
	expireAt int
}

type world struct {
	seed     int64
	cfg      Config
	rng      *rand.Rand
	m        *zkmodel.Model
	l        zklayout.Layout
	obs      zkmodel.SessionID
	svcs     []*service
	machines []*machine
	tick     int
	faults   int
	linger   []lingering
	trace    []string
	ctx      context.Context
	err      error
	summary  string
	findings []string
	// publishAt is when the operator writes the deploy (published: done).
	publishAt int
	published bool
	counts    map[string]int
	// behind is set by converged: an entry that waits behind a halted service it does not
	// depend on (a finding once no timer can move it).
	behind string
}

func (w *world) count(what string) {
	if w.counts == nil {
		w.counts = map[string]int{}
	}
	w.counts[what]++
}

// publish is the operator writing the deploy: the queue entries in dependency order, then
// the plans (the plan write is the commit point).
func (w *world) publish() {
	for _, s := range w.svcs {
		data, err := zklayout.Encode(&zklayout.DeployEntry{Deploy: "sim", Service: s.name, Version: v2, Generation: 1})
		if err == nil {
			_, err = w.m.Create(w.obs, w.l.DeployPrefix(s.name), data, zkmodel.PersistentSequential)
		}
		if !w.ok(err, "queue "+s.name) {
			return
		}
	}
	for _, s := range w.svcs {
		data, err := zklayout.Encode(&s.plan)
		if err == nil {
			_, err = w.m.Create(w.obs, w.l.StagingService(s.name), data, zkmodel.Persistent)
		}
		if !w.ok(err, "plan "+s.name) {
			return
		}
	}
	w.published = true
	w.logf("operator: deploy published (queue entries, then plans)")
}

// find records a finding (once per tag).
func (w *world) find(tag, format string, args ...any) {
	for _, f := range w.findings {
		if f == tag {
			return
		}
	}
	w.findings = append(w.findings, tag)
	w.logf("FINDING %s: "+format, append([]any{tag}, args...)...)
}

// depIncomplete names a service s depends on (its plan's dependsOn) that has not completed.
func (w *world) depIncomplete(s *service) string {
	for _, d := range w.svcs {
		if slices.Contains(s.plan.DependsOn, d.name) && !d.completed {
			return d.name
		}
	}
	return ""
}

// dependsOn reports whether s depends on the service named dep, directly or through others.
// Waiting behind a halted dependency is the design (a failure stops the deploy there), also
// when that dependency had completed before and was queued again for a node that fell behind.
func (w *world) dependsOn(s *service, dep string) bool {
	seen := map[string]bool{}
	var walk func(*service) bool
	walk = func(x *service) bool {
		for _, d := range x.plan.DependsOn {
			if d == dep {
				return true
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			for _, y := range w.svcs {
				if y.name == d && walk(y) {
					return true
				}
			}
		}
		return false
	}
	return walk(s)
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (w *world) now() time.Time { return epoch.Add(time.Duration(w.tick) * time.Second) }

func (w *world) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("t=%d ", w.tick)+fmt.Sprintf(format, args...))
}

func (w *world) fail(format string, args ...any) {
	if w.err == nil {
		w.err = fmt.Errorf("t=%d: "+format, append([]any{w.tick}, args...)...)
		w.logf("VIOLATION: "+format, args...)
	}
}

// ensurePath creates p and its ancestors (persistent), as zkclient.EnsurePath does.
func (w *world) ensurePath(s zkmodel.SessionID, p string) error {
	cur := ""
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		cur += "/" + part
		if _, err := w.m.Create(s, cur, nil, zkmodel.Persistent); err != nil && !errors.Is(err, zkclient.ErrNodeExists) {
			return err
		}
	}
	return nil
}

// ok records an operator write the model refused as the run's failure (the simulated world
// is broken: a bug of the simulation, reported with its seed like a violation).
func (w *world) ok(err error, what string) bool {
	if err != nil {
		w.fail("operator: %s: %v", what, err)
		return false
	}
	return true
}

func newWorld(seed int64, cfg Config) *world {
	w := &world{seed: seed, cfg: cfg, rng: rand.New(rand.NewSource(seed)), m: zkmodel.New(),
		l: zklayout.MustNew("/rk"), ctx: context.Background()}
	if cfg.MaxSteps == 0 {
		w.cfg.MaxSteps = 4000
	}
	switch {
	case cfg.Faults > 0:
		w.faults = cfg.Faults
	case cfg.Faults == 0:
		w.faults = w.rng.Intn(5)
	}
	w.obs = w.m.NewSession()
	nm := 3 + w.rng.Intn(5) // 3..7 machines
	ns := 1 + w.rng.Intn(3) // 1..3 services
	// The operator: bases, plans, deploy queue in dependency order.
	for _, b := range []string{w.l.Current(), w.l.Staging(), w.l.Deploy(), w.l.Releases(), w.l.Failures(), w.l.RollCalls()} {
		w.ok(w.ensurePath(w.obs, b), "ensure "+b)
	}
	var desc []string
	g := rand.New(rand.NewSource(seed*7919 + 17))
	for i := 0; i < ns; i++ {
		s := &service{idx: i, name: string(rune('a' + i)), min: w.rng.Intn(nm)}
		s.policy = zklayout.FailurePolicyPause
		if w.rng.Intn(2) == 0 {
			s.policy = zklayout.FailurePolicyRollback
		}
		s.plan = zklayout.Plan{Deploy: "sim", DeployUID: "uid-sim", Generation: 1, Service: s.name, Version: v2,
			PreviousVersion: v1, MinAvailable: s.min, FailurePolicy: s.policy, UpdatedAt: epoch}
		if i > 0 {
			s.plan.DependsOn = []string{w.svcs[i-1].name}
		}
		// The gates beyond the quorum are drawn from a generator of their own, so that the
		// worlds of the seeds from before them stay as they were.
		if g.Intn(2) == 0 {
			s.plan.MaxUnavailable = 1 + g.Intn(3)
		}
		if g.Intn(3) == 0 {
			t := &zklayout.Topology{Key: "rack", MaxUnavailablePerDomain: 1 + g.Intn(2)}
			for r := 0; r < 2; r++ {
				// rack r holds about half of the nm machines: a quorum below that.
				if size := (nm + 1 - r) / 2; size > 1 && g.Intn(2) == 0 {
					t.Domains = append(t.Domains, zklayout.DomainQuorum{Name: fmt.Sprintf("r%d", r), MinAvailable: g.Intn(size)})
				}
			}
			s.plan.Topology = t
		}
		if g.Intn(3) == 0 {
			// Failed health checks tolerated before the rollout halts.
			s.plan.MaxFailures = 1 + g.Intn(2)
		}
		if g.Intn(4) == 0 {
			// A canary phase that promotes itself once its nodes ran v2 a few ticks.
			s.plan.Canary, s.plan.CanaryBakeSeconds = 1+g.Intn(2), 3+g.Intn(12)
		}
		w.svcs = append(w.svcs, s)
	}
	// The deploy is published at once (a deploy while the agents start), or once the agents
	// had time to register v1 (the usual case).
	w.publishAt = 0
	if w.rng.Intn(3) > 0 {
		w.publishAt = 20 + w.rng.Intn(80)
	} else {
		w.publish()
	}
	for i := 0; i < nm; i++ {
		mc := &machine{idx: i, name: fmt.Sprintf("n%d", i+1), labels: map[string]string{"rack": fmt.Sprintf("r%d", i%2)}, up: true}
		for range w.svcs {
			p := &proc{running: true, healthy: true, version: v1, current: v1, inst: map[string]bool{v1: true}}
			// A bad version: v2 fails its first health check on this machine.
			if w.rng.Intn(12) == 0 {
				p.badFirst = true
			}
			mc.procs = append(mc.procs, p)
		}
		w.machines = append(w.machines, mc)
		w.startAgent(mc)
	}
	for _, s := range w.svcs {
		bad := []string{}
		for _, mc := range w.machines {
			if mc.procs[s.idx].badFirst {
				bad = append(bad, mc.name)
			}
		}
		gates := ""
		if s.plan.MaxUnavailable > 0 {
			gates += fmt.Sprintf(", maxUnavailable %d", s.plan.MaxUnavailable)
		}
		if t := s.plan.Topology; t != nil {
			gates += fmt.Sprintf(", by rack %d at a time, rack quorums %v", t.MaxUnavailablePerDomain, t.Domains)
		}
		if s.plan.MaxFailures > 0 {
			gates += fmt.Sprintf(", maxFailures %d", s.plan.MaxFailures)
		}
		if s.plan.Canary > 0 {
			gates += fmt.Sprintf(", canary %d baked %d ticks", s.plan.Canary, s.plan.CanaryBakeSeconds)
		}
		desc = append(desc, fmt.Sprintf("%s(min %d, %s%s, bad v2 on %v)", s.name, s.min, s.policy, gates, bad))
	}
	w.summary = fmt.Sprintf("seed %d: %d machines, services %s, fault budget %d, deploy published at t=%d", seed, nm, strings.Join(desc, " -> "), w.faults, w.publishAt)
	w.logf("world: %s", w.summary)
	return w
}

// startAgent starts the machine's agent with a new session: fresh workers and answerers (the
// real agent makes new ones per session).
func (w *world) startAgent(mc *machine) {
	mc.agentUp = true
	mc.session = w.m.NewSession()
	mc.watchOwner = map[zkmodel.WatchID]watchRef{}
	mc.workers = mc.workers[:0]
	mc.answerers = mc.answerers[:0]
	for _, s := range w.svcs {
		wk := &worker{w: w, mc: mc, svc: s, armed: map[string]zkmodel.WatchID{}, fired: map[string]bool{},
			reader: rollout.NewReader(zkmodel.Reads{M: w.m, S: mc.session}, w.l, s.name, mc.name, nil)}
		mc.workers = append(mc.workers, wk)
		mc.answerers = append(mc.answerers, &answerer{w: w, mc: mc, svc: s, run: true})
	}
	w.logf("%s: agent starts, session %d", mc.name, mc.session)
}

// lingerSession makes the machine's agent lose its session: it lingers until expireAt (a crashed
// agent's or machine's session outlives it by up to the session timeout), or expires now.
func (w *world) lingerSession(mc *machine, delay int) {
	if delay <= 0 {
		w.expire(mc.idx, mc.session)
		return
	}
	w.linger = append(w.linger, lingering{s: mc.session, m: mc.idx, expireAt: w.tick + delay})
}

func (w *world) expire(mi int, s zkmodel.SessionID) {
	if !w.m.Alive(s) {
		return
	}
	w.m.Expire(s)
	mc := w.machines[mi]
	for _, p := range mc.procs {
		p.lastFault = w.tick
	}
	w.logf("%s: session %d expired", mc.name, s)
}

// registered reports whether current/<svc>/<node> exists (ground truth of ZooKeeper).
func (w *world) registered(s *service, mc *machine) (bool, zkmodel.SessionID) {
	ok, st, err := w.m.Exists(w.obs, w.l.CurrentNode(s.name, mc.name))
	return ok && err == nil, st.EphemeralOwner
}
