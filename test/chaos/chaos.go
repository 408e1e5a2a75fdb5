// Package chaos is rollkeeper's randomized fault campaign: a real stack (a 3-server
// ZooKeeper ensemble, the API server, two operator replicas with leader election, eight agent
// processes on their own loopback addresses, fixture host services) rolls a diamond of four
// services through two version changes while a nemesis, drawn from the run's seed, kills,
// freezes and cuts things off. An independent checker then judges the run from the fixtures'
// own event log (ground truth), a separate ZooKeeper observer and the status the operator
// wrote. It imports nothing of the agent or the operator (nodeagent/, controllers/).
//
// Run it with `make chaos RUNS=N SEED=S`; `go test ./test/chaos` runs a short campaign.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

const (
	nodeCount = 8
	rdName    = "chaos"
	// sessionTimeout is the agents' and operators' ZooKeeper session timeout.
	sessionTimeout = 4 * time.Second
)

// The diamond: B and C depend on A, D on B and C; quorums in counts and percentages.
var (
	services = []string{"a", "b", "c", "d"}
	deps     = map[string][]string{"b": {"a"}, "c": {"a"}, "d": {"b", "c"}}
	quorums  = map[string]intstr.IntOrString{
		"a": intstr.FromInt32(4),
		"b": intstr.FromString("60%"),
		"c": intstr.FromInt32(3),
		"d": intstr.FromString("50%"),
	}
	// A mix of the gates beyond the quorum: a holds each upgraded node a second before it
	// counts and asks each node's preStopCheck (always yes: the path, not a veto), b at most 2
	// upgrading, c zone by zone (nodes 1-4 in zone-a, 5-8 in zone-b) 2 per zone inside a
	// maintenance window that is always open (24 hours from 09:00 in Tokyo, which has no
	// daylight saving time: the zone path, never a wait), d a canary node that promotes itself
	// after 2 s, then at most a quarter at once. The service whose v3 is unhealthy tolerates
	// one failure (maxFailures 1): it halts at the second.
	maxUnavailable = map[string]intstr.IntOrString{"b": intstr.FromInt32(2), "d": intstr.FromString("25%")}
	zoneKey        = "topology.kubernetes.io/zone"
	maxFailures    = int32(1)
	perZone        = map[string]int{"c": 2}
)

// zoneOf is node i's zone (1-based).
func zoneOf(i int) string {
	if i <= nodeCount/2 {
		return "zone-a"
	}
	return "zone-b"
}

// resolvedQuorum is the node count a quorum means among n nodes (percentages rounded up, as
// the design says).
func resolvedQuorum(q intstr.IntOrString, n int) int {
	if q.Type == intstr.Int {
		return q.IntValue()
	}
	var p int
	fmt.Sscanf(strings.TrimSuffix(q.StrVal, "%"), "%d", &p)
	return (p*n + 99) / 100
}

// resolvedMaxUnavailable is maxUnavailable of n nodes: percentages round down, at least 1.
func resolvedMaxUnavailable(q intstr.IntOrString, n int) int {
	if q.Type == intstr.Int {
		return q.IntValue()
	}
	var p int
	fmt.Sscanf(strings.TrimSuffix(q.StrVal, "%"), "%d", &p)
	return max(1, p*n/100)
}

// plan is what a seed draws: the run's shape and its nemesis schedule.
type plan struct {
	Seed int64
	// Unhealthy names the service whose last version fails its health check ("" if none),
	// with the failure policy of the run.
	Unhealthy string
	Policy    rkv1alpha1.FailurePolicy
	// Faults per step (two steps).
	Faults [2][]fault
	// DiskNode is the node whose state dir is a small tmpfs (for a disk-full fault), or "".
	DiskNode string
}

// fault is one nemesis action.
type fault struct {
	Kind string
	// Node is the target node, where the fault has one.
	Node string
	// After is how many more current/ changes the observer must see in the step before the
	// fault fires (-1: before the step's new version is even published).
	After int
	// Long: a killed agent stays down until its session expired.
	Long bool
}

func (f fault) String() string {
	s := f.Kind
	if f.Node != "" {
		s += " " + f.Node
	}
	if f.Long {
		s += " (until its session expires)"
	}
	if f.After < 0 {
		s += " before the step"
	} else {
		s += fmt.Sprintf(" after %d changes", f.After)
	}
	return s
}

// Fault kinds.
const (
	faultKillAgent   = "kill-agent"
	faultFreeze      = "freeze-agent-mid-upgrade"
	faultCutOff      = "cut-agent-from-zookeeper"
	faultZKLeader    = "kill-zookeeper-leader"
	faultZKFollower  = "kill-zookeeper-follower"
	faultAPIServer   = "stop-api-server"
	faultOperator    = "kill-operator-leader"
	faultOrigin      = "origin-down"
	faultDiskFull    = "disk-full"
	faultCorruptPeer = "corrupt-peer"
	// faultCrashAgent SIGKILLs an agent alone: its host services must keep running (they
	// outlive the agent) and the next agent adopts them. Drawn after the others, so that adding
	// it left the earlier seeds' draws as they were.
	faultCrashAgent = "crash-agent-only"
)

var faultKinds = []string{faultKillAgent, faultFreeze, faultCutOff, faultZKLeader, faultZKFollower,
	faultAPIServer, faultOperator, faultOrigin, faultDiskFull, faultCorruptPeer}

// drawPlan draws a run's plan from its seed: the same seed gives the same plan.
func drawPlan(seed int64, root bool) plan {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	p := plan{Seed: seed, Policy: rkv1alpha1.FailurePolicyPause}
	if rng.IntN(3) == 0 {
		p.Unhealthy = []string{"a", "b", "c"}[rng.IntN(3)]
		if rng.IntN(2) == 0 {
			p.Policy = rkv1alpha1.FailurePolicyRollback
		}
	}
	kinds := slices.Clone(faultKinds)
	if !root {
		kinds = slices.DeleteFunc(kinds, func(k string) bool { return k == faultDiskFull })
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	n := 0
	for step := range 2 {
		for range 2 + rng.IntN(2) {
			if n == len(kinds) {
				break
			}
			f := fault{Kind: kinds[n], After: rng.IntN(30)}
			n++
			switch f.Kind {
			case faultKillAgent:
				f.Node = harness.NodeName(1 + rng.IntN(nodeCount))
				f.Long = rng.IntN(2) == 0
			case faultCutOff, faultCorruptPeer:
				f.Node = harness.NodeName(1 + rng.IntN(nodeCount))
			case faultDiskFull:
				f.Node = harness.NodeName(1 + rng.IntN(nodeCount))
				f.After = -1
				p.DiskNode = f.Node
			case faultOrigin:
				if rng.IntN(2) == 0 {
					f.After = -1
				}
			}
			p.Faults[step] = append(p.Faults[step], f)
		}
	}
	if rng.IntN(2) == 0 {
		step := rng.IntN(2)
		f := fault{Kind: faultCrashAgent, Node: harness.NodeName(1 + rng.IntN(nodeCount)), After: rng.IntN(30), Long: rng.IntN(2) == 0}
		p.Faults[step] = append(p.Faults[step], f)
	}
	return p
}

func (p plan) String() string {
	s := fmt.Sprintf("seed %d:", p.Seed)
	if p.Unhealthy != "" {
		s += fmt.Sprintf(" %s's v3 is unhealthy (failurePolicy %s);", p.Unhealthy, p.Policy)
	}
	for i, fs := range p.Faults {
		var parts []string
		for _, f := range fs {
			parts = append(parts, f.String())
		}
		s += fmt.Sprintf(" step %d: [%s];", i+1, strings.Join(parts, ", "))
	}
	return s
}

// Report is the outcome of one run.
type Report struct {
	Plan     plan
	Injected []string
	Results  []result
	Dips     []dip
	Notes    []string
	Duration time.Duration
	// Err is set when the run could not be carried out (setup failed): not a verdict.
	Err error
}

// Violations counts the failed invariants.
func (r Report) Violations() int {
	n := 0
	for _, res := range r.Results {
		if !res.Pass {
			n++
		}
	}
	return n
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "=== chaos run %s\n", r.Plan)
	fmt.Fprintf(&b, "  faults injected:\n")
	for _, f := range r.Injected {
		fmt.Fprintf(&b, "    %s\n", f)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintf(&b, "  notes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "    %s\n", n)
		}
	}
	fmt.Fprintf(&b, "  invariants:\n")
	for _, res := range r.Results {
		fmt.Fprintf(&b, "    %s\n", res)
	}
	fmt.Fprintf(&b, "  dips below quorum (ground truth, crashes included; the goal is none): %d\n", len(r.Dips))
	for _, d := range r.Dips {
		fmt.Fprintf(&b, "    %s: %s for %s, down to %d of %d; began with %s\n", d.Service,
			d.From.Format("15:04:05.000"), d.To.Sub(d.From).Round(time.Millisecond), d.Min, d.Quorum, d.Cause)
	}
	if r.Err != nil {
		fmt.Fprintf(&b, "  RUN ERROR: %v\n", r.Err)
	}
	fmt.Fprintf(&b, "  seed %d: %d violation(s) in %s\n", r.Plan.Seed, r.Violations(), r.Duration.Round(time.Second))
	return b.String()
}

// run is one run's state.
type run struct {
	plan   plan
	logf   func(string, ...any)
	stack  *harness.Stack
	ops    []*harness.Process
	prox   map[string]*zkProxy
	obs    *observer
	truth  *groundTruth
	events string
	quorum map[string]int

	zkMu sync.Mutex

	mu       sync.Mutex
	injected []string
	windows  []window
	crashes  []agentCrash
	results  []result
	notes    []string
	versions map[string]string // current spec version per service
}

func (r *run) inject(format string, args ...any) {
	msg := time.Now().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.injected = append(r.injected, msg)
	r.mu.Unlock()
	r.logf("nemesis: %s", msg)
}

func (r *run) note(format string, args ...any) {
	msg := time.Now().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.notes = append(r.notes, msg)
	r.mu.Unlock()
	r.logf("note: %s", msg)
}

func (r *run) addResult(res result) {
	r.mu.Lock()
	r.results = append(r.results, res)
	r.mu.Unlock()
}

// down opens a nemesis window on node; the returned func closes it.
func (r *run) down(node, fault string) func() {
	r.mu.Lock()
	i := len(r.windows)
	r.windows = append(r.windows, window{Node: node, Fault: fault, From: time.Now()})
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.windows[i].To = time.Now()
		r.mu.Unlock()
	}
}

// Run carries out the run of seed and judges it.
func Run(ctx context.Context, seed int64, logf func(string, ...any)) (rep Report) {
	start := time.Now()
	p := drawPlan(seed, os.Geteuid() == 0)
	rep.Plan = p
	logf("chaos: %s", p)
	r := &run{plan: p, logf: logf, prox: map[string]*zkProxy{}, versions: map[string]string{}}
	defer func() { rep.Duration = time.Since(start) }()
	err := r.execute(ctx, &rep)
	if err != nil {
		rep.Err = err
	}
	return rep
}

func (r *run) execute(ctx context.Context, rep *Report) (err error) {
	dir, err := os.MkdirTemp("", "rollkeeper-chaos-")
	if err != nil {
		return err
	}
	keep := os.Getenv(harness.KeepDirEnv) == "1"
	r.events = filepath.Join(dir, "fixture-events.jsonl")
	var mounted string
	defer func() {
		r.teardown()
		if mounted != "" {
			_ = exec.Command("umount", "-l", mounted).Run()
		}
		if !keep && err == nil && rep.Violations() == 0 {
			_ = os.RemoveAll(dir)
		} else {
			r.logf("chaos: kept %s", dir)
		}
	}()

	var proxyErr error
	cfg := harness.Config{
		Nodes:            nodeCount,
		NodeLabels:       func(i int) map[string]string { return map[string]string{zoneKey: zoneOf(i)} },
		ZooKeeperServers: 3,
		ZKSessionTimeout: sessionTimeout,
		SkipAgents:       true,
		Dir:              filepath.Join(dir, "stack"),
		ManagerArgs:      []string{"--leader-elect", "--leader-election-namespace=default"},
		Logf:             r.logf,
		AgentZKServers: func(i int, servers string) string {
			px, err := newZKProxy(harness.NodeName(i), harness.NodeAddress(i), servers)
			if err != nil {
				proxyErr = errors.Join(proxyErr, err)
				return ""
			}
			r.prox[harness.NodeName(i)] = px
			return px.servers
		},
	}
	s, err := harness.Start(ctx, cfg)
	if err != nil {
		return err
	}
	r.stack = s
	if proxyErr != nil {
		return proxyErr
	}
	if r.plan.DiskNode != "" {
		n := s.NodeByName(r.plan.DiskNode)
		// Room for a few versions of the four services, filled up by the fault.
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", n.StateDir).CombinedOutput(); err != nil {
			return fmt.Errorf("mount a tmpfs as %s's state dir: %v: %s", n.Name, err, out)
		}
		mounted = n.StateDir
	}
	for _, n := range s.Nodes {
		if err := n.Start(); err != nil {
			return err
		}
	}
	// The second operator replica: same command line, its own seeder directory.
	second := &harness.Process{
		Name:    "operator-2",
		Path:    s.Operator.Path,
		Args:    append(s.ManagerArgs(), "--seeder-dir="+filepath.Join(s.Dir, "seeder-2")),
		LogPath: filepath.Join(s.Dir, "logs", "operator-2.log"),
		Dir:     s.Dir,
	}
	if err := second.Start(); err != nil {
		return err
	}
	r.ops = []*harness.Process{s.Operator, second}

	r.quorum = map[string]int{}
	for _, svc := range services {
		r.quorum[svc] = resolvedQuorum(quorums[svc], nodeCount)
	}
	if r.obs, err = newObserver(s.ZKServers, s.Layout.Root(), services); err != nil {
		return err
	}
	r.truth = newGroundTruth(r.events)

	// v1 everywhere, no fault.
	if err := r.setVersions(ctx, map[string]string{"a": "v1", "b": "v1", "c": "v1", "d": "v1"}, true); err != nil {
		return err
	}
	if _, err := s.WaitForReady(ctx, rdName, 5*time.Minute); err != nil {
		return fmt.Errorf("v1: %w", err)
	}
	for _, svc := range services {
		if err := s.WaitForServiceVersions(ctx, svc, "v1", 2*time.Minute); err != nil {
			return fmt.Errorf("v1: %w", err)
		}
	}
	from := time.Now()
	r.logf("chaos: v1 in place; rolling v2 then v3 under the nemesis")

	var steps []stepRecord
	for i, ver := range []string{"v2", "v3"} {
		step := stepRecord{Index: i + 1, Previous: map[string]string{}, Target: map[string]string{}}
		for _, svc := range services {
			step.Previous[svc] = r.versions[svc]
			step.Target[svc] = ver
		}
		if i == 1 {
			step.Unhealthy = r.plan.Unhealthy
		}
		step.Start = time.Now()
		if err := r.step(ctx, step, r.plan.Faults[i]); err != nil {
			step.End = time.Now()
			steps = append(steps, step)
			r.addResult(result{Name: fmt.Sprintf("step %d settles", step.Index), Evidence: []string{err.Error()}})
			break
		}
		step.End = time.Now()
		steps = append(steps, step)
	}
	to := time.Now()

	r.obs.Stop()
	r.truth.Stop()
	in := checkInput{
		Services: services, Quorum: r.quorum, Deps: deps, Events: r.truth.Events(),
		Windows: r.windows, Crashes: r.crashes, Steps: steps, Snaps: r.obs.Snapshots(), Rounds: r.obs.Rounds(), From: from, To: to,
	}
	in.MaxUnavailable, in.PerZone, in.Zone = map[string]int{}, perZone, map[string]string{}
	for svc, mu := range maxUnavailable {
		in.MaxUnavailable[svc] = resolvedMaxUnavailable(mu, nodeCount)
	}
	for _, n := range s.Nodes {
		in.Nodes = append(in.Nodes, n.Name)
		in.Zone[n.Name] = zoneOf(n.Index)
	}
	if bad := r.truth.BadLines(); len(bad) > 0 {
		r.note("undecodable event log lines: %q", bad)
	}
	r.results = append([]result{checkQuorum(in), checkGates(in), checkOrder(in, "d")}, r.results...)
	if len(in.Crashes) > 0 {
		r.results = append(r.results, checkAgentCrashes(in))
	}
	rep.Dips = findDips(in)
	rep.Results, rep.Injected, rep.Notes = r.results, r.injected, r.notes
	return nil
}

func (r *run) teardown() {
	if r.obs != nil {
		r.obs.Stop()
	}
	if r.truth != nil {
		r.truth.Stop()
	}
	for _, n := range r.stackNodes() {
		_ = n.Thaw()
	}
	for _, px := range r.prox {
		px.Heal()
	}
	if r.stack != nil {
		if pid := apiServerPid(); pid > 0 {
			_ = syscallKill(pid, sigCont)
		}
		for _, op := range r.ops[min(1, len(r.ops)):] {
			_ = op.Stop(10 * time.Second)
		}
		r.stack.Stop()
	}
	for _, px := range r.prox {
		px.Close()
	}
}

func (r *run) stackNodes() []*harness.Node {
	if r.stack == nil {
		return nil
	}
	return r.stack.Nodes
}

// specs builds the RollingDeploy's services at the given versions.
func (r *run) specs(versions map[string]string, unhealthy string) ([]rkv1alpha1.ServiceSpec, error) {
	var out []rkv1alpha1.ServiceSpec
	for _, svc := range services {
		opts := []harness.ServiceOption{
			harness.Mutate(func(sp *rkv1alpha1.ServiceSpec) {
				sp.Quorum.MinAvailable = quorums[svc]
				sp.DependsOn = deps[svc]
				if mu, ok := maxUnavailable[svc]; ok {
					sp.Strategy = &rkv1alpha1.StrategySpec{MaxUnavailable: &mu}
				}
				if per, ok := perZone[svc]; ok {
					sp.Strategy = &rkv1alpha1.StrategySpec{Topology: &rkv1alpha1.TopologySpec{Key: zoneKey, MaxUnavailablePerDomain: int32(per)},
						MaintenanceWindows: []rkv1alpha1.MaintenanceWindow{{Start: "09:00", End: "09:00", TimeZone: "Asia/Tokyo"}}}
				}
				switch svc {
				case "a":
					sp.Strategy = &rkv1alpha1.StrategySpec{MinHealthyTime: &metav1.Duration{Duration: time.Second},
						PreStopCheck: &rkv1alpha1.PreStopCheckSpec{Exec: &rkv1alpha1.ExecCheck{Command: []string{"true"}}, TimeoutSeconds: 5, PeriodSeconds: 1}}
				case "d":
					sp.Strategy.Canary = &rkv1alpha1.CanarySpec{Nodes: intstr.FromInt32(1), BakeTime: &metav1.Duration{Duration: 2 * time.Second}}
				}
				if svc == unhealthy {
					budget := intstr.FromInt32(maxFailures)
					sp.Strategy.MaxFailures = &budget
				}
				// The ground truth: every fixture logs when it starts and stops serving.
				sp.Run.Args = append(sp.Run.Args, "--event-log="+r.events, "--startup-delay=300ms")
			}),
		}
		if svc == unhealthy {
			opts = append(opts, harness.Unhealthy())
		}
		sp, err := r.stack.FixtureService(svc, versions[svc], opts...)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, nil
}

// setVersions creates (first) or updates the RollingDeploy.
func (r *run) setVersions(ctx context.Context, versions map[string]string, create bool) error {
	unhealthy := ""
	if versions["a"] == "v3" {
		unhealthy = r.plan.Unhealthy
	}
	specs, err := r.specs(versions, unhealthy)
	if err != nil {
		return err
	}
	r.mu.Lock()
	for k, v := range versions {
		r.versions[k] = v
	}
	r.mu.Unlock()
	if create {
		rd := harness.NewRollingDeploy(rdName, specs...)
		rd.Spec.FailurePolicy = r.plan.Policy
		return r.stack.Client.Create(ctx, rd)
	}
	return r.stack.UpdateRD(ctx, rdName, func(rd *rkv1alpha1.RollingDeploy) { rd.Spec.Services = specs })
}

// expected is what every node must serve after step: the target, except for a service that
// halts on an unhealthy version and every service after it in the deploy order, which stay on
// the previous. The deploy queue upgrades one service at a time in topological order (ties by
// name: services is that order) and a failure stops the deploy, so a service that does not
// depend on the failed one (c, when b fails) waits too.
func expected(step stepRecord) map[string]string {
	out := map[string]string{}
	halted := false
	for _, svc := range services {
		halted = halted || svc == step.Unhealthy
		out[svc] = step.Target[svc]
		if halted {
			out[svc] = step.Previous[svc]
		}
	}
	return out
}

// sortedKeys of a map, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
