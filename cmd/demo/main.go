// Command rollkeeper-demo (make demo) shows rollkeeper end to end on one machine: it starts a
// real API server and etcd, a real ZooKeeper, the operator and five simulated nodes (agent
// processes at 127.0.0.2-6, each running the fixture host service), applies a RollingDeploy of
// services a and b (b depends on a; a keeps at least 3 nodes online), waits for v1 everywhere,
// rolls both to v2 with a live table per service and per node, and checks what an independent
// ZooKeeper watcher recorded: a never dropped below its quorum, b started only after a was done.
//
// With a terminal on stdin it then prints how to poke the running stack and waits for Ctrl-C.
// Without one (CI) it tears everything down and exits 0 on success, 1 with the reason on
// failure. Every process it started is stopped either way.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/term"
	"k8s.io/client-go/tools/clientcmd"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/dashboard"
	"github.com/rollkeeper/rollkeeper/internal/localstack"
)

type options struct {
	nodes    int
	timeout  time.Duration
	sample   string
	name     string
	keep     bool
	wait     string // auto, yes, no
	verbose  bool
	interval time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 5, "number of simulated nodes")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up on the rollouts after this long")
	flag.StringVar(&o.sample, "sample", "", "RollingDeploy manifest with ${VAR} placeholders (default: config/samples/*rollingdeploy*.yaml if it resolves, else a built-in one)")
	flag.BoolVar(&o.keep, "keep", false, "keep the stack's directory (logs, state) after teardown")
	flag.StringVar(&o.wait, "wait", "auto", "wait for Ctrl-C after the rollout: auto (when stdin is a terminal), yes or no")
	flag.BoolVar(&o.verbose, "v", false, "print the stack's progress messages")
	flag.DurationVar(&o.interval, "refresh", 500*time.Millisecond, "how often the live table refreshes")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, o)
	os.Exit(code)
}

func run(ctx context.Context, o options) int {
	interactive := term.IsTerminal(int(os.Stdin.Fd()))
	switch o.wait {
	case "yes":
		interactive = true
	case "no":
		interactive = false
	}
	if o.keep {
		os.Setenv(localstack.KeepDirEnv, "1")
	}
	d := &demo{opts: o, out: os.Stdout, tty: term.IsTerminal(int(os.Stdout.Fd()))}
	err := d.run(ctx)
	if err == nil && interactive {
		d.explain()
		fmt.Fprintln(d.out, "Press Ctrl-C to stop everything.")
		<-ctx.Done()
		fmt.Fprintln(d.out)
	}
	interrupted := err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled)
	if d.stack != nil {
		if err != nil && !interrupted {
			fmt.Fprintln(os.Stderr, "\nLogs of the failed demo (tails):")
			d.stack.DumpLogs(os.Stderr, 8<<10)
		}
		if d.stopDashboard != nil {
			d.stopDashboard()
		}
		fmt.Fprintln(d.out, "Stopping the operator, the agents, the API server and ZooKeeper...")
		d.stack.Stop()
	}
	localstack.CleanupBinaries()
	if interrupted {
		fmt.Fprintln(os.Stderr, "demo interrupted")
		return 130
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintln(d.out, "demo OK: every node runs v2 of a and b; a never had fewer than its quorum online; b started only after a was done.")
	return 0
}

type demo struct {
	opts  options
	out   io.Writer
	tty   bool
	stack *localstack.Stack
	rd    *rkv1alpha1.RollingDeploy
	// since is when the update to v2 was applied (zero before).
	since     time.Time
	lastFrame string
	// sample is the manifest used (empty: the built-in one); chosen once, before the stack.
	sample string
	// dashboardURL is the page the demo serves (empty: none); stopDashboard ends it.
	dashboardURL  string
	stopDashboard func()
}

const rdName = "demo"

func (d *demo) logf(format string, args ...any) {
	if d.opts.verbose {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}

func (d *demo) run(ctx context.Context) error {
	outer := ctx // the dashboard outlives the rollout: it serves until the demo stops
	ctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()
	fmt.Fprintf(d.out, "Starting kube-apiserver + etcd, ZooKeeper, the operator and %d nodes (building binaries if needed)...\n", d.opts.nodes)
	if err := d.chooseSample(); err != nil {
		return err
	}
	start := time.Now()
	s, err := localstack.Start(ctx, localstack.Config{
		Nodes:          d.opts.nodes,
		NodeLabels:     nodeLabels,
		RecordServices: []string{"a", "b"},
		Logf:           d.logf,
	})
	if err != nil {
		return fmt.Errorf("bring up the stack: %w", err)
	}
	d.stack = s
	fmt.Fprintf(d.out, "Stack up in %s (state and logs in %s).\n", time.Since(start).Round(100*time.Millisecond), s.Dir)
	d.startDashboard(outer)

	v1, source, err := d.rollingDeploy("v1")
	if err != nil {
		return err
	}
	for _, sp := range v1.Spec.Services {
		if err := s.Recorder.Watch(ctx, sp.Name); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "Applying RollingDeploy %q at v1 (%s).\n", rdName, source)
	if err := s.Client.Create(ctx, v1); err != nil {
		return fmt.Errorf("create RollingDeploy %s: %w", rdName, err)
	}
	if err := d.follow(ctx, "v1"); err != nil {
		return fmt.Errorf("roll out v1: %w", err)
	}

	fmt.Fprintln(d.out, "\nEverything runs v1. Updating the RollingDeploy to v2...")
	updateAt := time.Now()
	d.since = updateAt
	v2, _, err := d.rollingDeploy("v2")
	if err != nil {
		return err
	}
	if err := s.UpdateRD(ctx, rdName, func(rd *rkv1alpha1.RollingDeploy) { rd.Spec = v2.Spec }); err != nil {
		return err
	}
	if err := d.follow(ctx, "v2"); err != nil {
		return fmt.Errorf("roll out v2: %w", err)
	}
	return d.verify(v2, updateAt)
}

// demoLabel marks the nodes the demo's services run on (the sample's nodeSelector).
const demoLabel = "rollkeeper.io/demo"

// nodeLabels marks every demo node and puts them in two zones.
func nodeLabels(i int) map[string]string {
	zone := "zone-a"
	if i%2 == 0 {
		zone = "zone-b"
	}
	return map[string]string{demoLabel: "true", "topology.kubernetes.io/zone": zone}
}

// rollingDeploy returns the demo's RollingDeploy at version: the sample manifest with its
// placeholders filled in when it resolves, else the built-in one of the same shape.
func (d *demo) rollingDeploy(version string) (*rkv1alpha1.RollingDeploy, string, error) {
	path := d.sample
	if path != "" {
		rd, err := d.fromSample(path, version)
		if err == nil {
			return rd, path, nil
		}
		if d.opts.sample != "" {
			return nil, "", err
		}
		d.logf("demo: not using %s: %v", path, err)
	}
	rd, err := d.builtIn(version)
	return rd, "built-in manifest", err
}

// chooseSample picks the manifest: --sample, else config/samples/*rollingdeploy*.yaml if it
// resolves. The sample's services listen on fixed ports of the node addresses (127.0.0.2...),
// which are the same for every demo on the machine: when one is taken (another make demo is
// running) an explicit --sample fails at once, naming the port, and the default sample gives way
// to the built-in manifest, whose services get free ports, so a second demo works.
func (d *demo) chooseSample() error {
	path := d.opts.sample
	if path == "" {
		root, err := localstack.RepoRoot()
		if err == nil {
			matches, _ := filepath.Glob(filepath.Join(root, "config", "samples", "*rollingdeploy*.yaml"))
			sort.Strings(matches)
			if len(matches) > 0 {
				path = matches[0]
			}
		}
	}
	if path == "" {
		return nil
	}
	busy, err := busyPort(path, d.opts.nodes)
	if err != nil {
		return err
	}
	switch {
	case busy == "":
		d.sample = path
	case d.opts.sample != "":
		return fmt.Errorf("sample %s: %s is in use (is another make demo running?); the sample's services listen on fixed ports of the node addresses 127.0.0.2-%d, the same for every demo on this machine: stop the other demo, or use ${A_PORT}-style placeholders (free ports) in the sample",
			path, busy, d.opts.nodes+1)
	default:
		fmt.Fprintf(d.out, "%s, which %s uses, is in use (another make demo?): using the built-in manifest, with free ports, instead.\n", busy, path)
	}
	return nil
}

var fixedPortRE = regexp.MustCompile(`(?m)^\s*port:\s*(\d+)\s*$`)

// busyPort returns "port P on A" for the first fixed health-check port of the sample that
// cannot be bound on one of the demo's node addresses, or "".
func busyPort(path string, nodes int) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read sample: %w", err)
	}
	for _, m := range fixedPortRE.FindAllStringSubmatch(string(raw), -1) {
		for i := 1; i <= nodes; i++ {
			addr := net.JoinHostPort(localstack.NodeAddress(i), m[1])
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Sprintf("port %s on %s (%s)", m[1], localstack.NodeAddress(i), localstack.NodeName(i)), nil
			}
			ln.Close()
		}
	}
	return "", nil
}

// builtIn is a with quorum 3 and b (depends on a) with quorum 60%, both the fixture service.
func (d *demo) builtIn(version string) (*rkv1alpha1.RollingDeploy, error) {
	sel := localstack.NodeSelector(map[string]string{demoLabel: "true"})
	a, err := d.stack.FixtureService("a", version, localstack.MinAvailable(3), sel)
	if err != nil {
		return nil, err
	}
	b, err := d.stack.FixtureService("b", version, localstack.DependsOn("a"), localstack.MinAvailablePercent("60%"), sel)
	if err != nil {
		return nil, err
	}
	return localstack.NewRollingDeploy(rdName, a, b), nil
}

var placeholderRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// fromSample reads a RollingDeploy manifest, fills in ${VAR} placeholders and sets every
// service to version with its fixture artifact. Known variables, for each service S (upper
// case, '-' as '_'): ARTIFACT_S_URL, ARTIFACT_S_SHA256, ARTIFACT_S_VERSION, ARTIFACT_S_FILE_URL,
// S_PORT, PORT_S, S_VERSION, VERSION_S; and VERSION.
func (d *demo) fromSample(path, version string) (*rkv1alpha1.RollingDeploy, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sample: %w", err)
	}
	// Service names first, from a lenient parse (placeholders may stand where numbers go).
	var generic struct {
		Spec struct {
			Services []struct {
				Name string `json:"name"`
			} `json:"services"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &generic); err != nil {
		return nil, fmt.Errorf("sample %s: %w", path, err)
	}
	vars := map[string]string{"VERSION": version}
	for _, sp := range generic.Spec.Services {
		if err := d.addVars(vars, sp.Name, version); err != nil {
			return nil, err
		}
	}
	var missing []string
	filled := placeholderRE.ReplaceAllStringFunc(string(raw), func(m string) string {
		name := placeholderRE.FindStringSubmatch(m)[1]
		if v, ok := vars[name]; ok {
			return v
		}
		missing = append(missing, name)
		return m
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("sample %s: unknown placeholders %v", path, missing)
	}
	rd := &rkv1alpha1.RollingDeploy{}
	if err := yaml.UnmarshalStrict([]byte(filled), rd); err != nil {
		return nil, fmt.Errorf("sample %s: %w", path, err)
	}
	if rd.Kind != "RollingDeploy" {
		return nil, fmt.Errorf("sample %s: kind %q, want RollingDeploy", path, rd.Kind)
	}
	rd.Name = rdName
	for i := range rd.Spec.Services {
		sp := &rd.Spec.Services[i]
		a, err := d.stack.FixtureArtifact(sp.Name, version, false)
		if err != nil {
			return nil, err
		}
		sp.Version = version
		sp.Artifact.URL, sp.Artifact.SHA256 = a.URL, a.SHA256
		if sp.HealthCheck == nil || sp.HealthCheck.HTTPGet == nil {
			return nil, fmt.Errorf("sample %s: service %s has no httpGet health check to find its port", path, sp.Name)
		}
	}
	return rd, nil
}

func (d *demo) addVars(vars map[string]string, svc, version string) error {
	a, err := d.stack.FixtureArtifact(svc, version, false)
	if err != nil {
		return err
	}
	port, err := d.stack.ServicePort(svc)
	if err != nil {
		return err
	}
	up := strings.ToUpper(strings.ReplaceAll(svc, "-", "_"))
	vars["ARTIFACT_"+up+"_URL"] = a.URL
	vars["ARTIFACT_"+up+"_SHA256"] = a.SHA256
	vars["ARTIFACT_"+up+"_FILE_URL"] = a.FileURL
	vars[up+"_PORT"] = fmt.Sprint(port)
	vars["PORT_"+up] = fmt.Sprint(port)
	vars["ARTIFACT_"+up+"_VERSION"] = version
	vars[up+"_VERSION"] = version
	vars["VERSION_"+up] = version
	return nil
}

// servicePort is the port of svc's fixture: its health check port.
func servicePort(rd *rkv1alpha1.RollingDeploy, svc string) int {
	for _, sp := range rd.Spec.Services {
		if sp.Name == svc && sp.HealthCheck != nil && sp.HealthCheck.HTTPGet != nil {
			return int(sp.HealthCheck.HTTPGet.Port)
		}
	}
	return 0
}

// follow redraws the live table until the RollingDeploy is Ready for its current generation
// and every node's fixture answers version, or fails when it is Degraded or Stalled.
func (d *demo) follow(ctx context.Context, version string) error {
	ticker := time.NewTicker(d.opts.interval)
	defer ticker.Stop()
	for {
		rd, err := d.stack.GetRD(ctx, rdName)
		if err != nil {
			return err
		}
		d.rd = rd
		serving := d.serving(ctx, rd)
		d.draw(rd, serving, version)
		if err := failure(rd); err != nil {
			return err
		}
		if localstack.Observed(rd) && ready(rd) && allServe(serving, version) && d.allRegistered(rd, version) {
			d.lastFrame = ""
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not done within --timeout=%s; last status: %s", d.opts.timeout, localstack.DescribeStatus(rd))
			}
			return fmt.Errorf("%w; last status: %s", ctx.Err(), localstack.DescribeStatus(rd))
		case <-ticker.C:
		case <-d.stack.Recorder.Changed():
		}
	}
}

// allRegistered reports whether, for every service, the status counts every node as updated
// and ZooKeeper's current/ lists every demo node on version.
func (d *demo) allRegistered(rd *rkv1alpha1.RollingDeploy, version string) bool {
	for _, sp := range rd.Spec.Services {
		st := localstack.ServiceStatus(rd, sp.Name)
		if st == nil || st.Total != int32(len(d.stack.Nodes)) || st.Updated != st.Total {
			return false
		}
		online := d.stack.Recorder.Online(sp.Name)
		for _, n := range d.stack.Nodes {
			if online[n.Name] != version {
				return false
			}
		}
	}
	return true
}

func ready(rd *rkv1alpha1.RollingDeploy) bool {
	for _, c := range rd.Status.Conditions {
		if c.Type == rkv1alpha1.ConditionReady {
			return c.Status == "True"
		}
	}
	return false
}

// failure reports a Degraded or Stalled RollingDeploy as an error.
func failure(rd *rkv1alpha1.RollingDeploy) error {
	if !localstack.Observed(rd) {
		return nil
	}
	for _, c := range rd.Status.Conditions {
		if (c.Type == rkv1alpha1.ConditionDegraded || c.Type == rkv1alpha1.ConditionStalled) && c.Status == "True" {
			return fmt.Errorf("RollingDeploy %s is %s (%s): %s", rd.Name, c.Type, c.Reason, c.Message)
		}
	}
	return nil
}

// serving asks every node's fixture of every service for its version: svc -> node -> answer.
func (d *demo) serving(ctx context.Context, rd *rkv1alpha1.RollingDeploy) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, sp := range rd.Spec.Services {
		port := servicePort(rd, sp.Name)
		m := map[string]string{}
		for _, n := range d.stack.Nodes {
			qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			v, err := n.Version(qctx, port)
			cancel()
			if err != nil {
				v = "-"
			}
			m[n.Name] = v
		}
		out[sp.Name] = m
	}
	return out
}

func allServe(serving map[string]map[string]string, version string) bool {
	if len(serving) == 0 {
		return false
	}
	for _, m := range serving {
		for _, v := range m {
			if v != version {
				return false
			}
		}
	}
	return true
}

// draw renders the table: on a terminal it repaints the screen; otherwise it prints the table
// whenever its content changed.
func (d *demo) draw(rd *rkv1alpha1.RollingDeploy, serving map[string]map[string]string, version string) {
	var b strings.Builder
	readyStatus := "-"
	for _, c := range rd.Status.Conditions {
		if c.Type == rkv1alpha1.ConditionReady {
			readyStatus = fmt.Sprintf("%s (%s)", c.Status, c.Reason)
		}
	}
	fmt.Fprintf(&b, "RollingDeploy %s -> %s   generation %d (observed %d)   phase %s   progress %s   Ready=%s\n\n",
		rd.Name, version, rd.Generation, rd.Status.ObservedGeneration, orDash(string(rd.Status.Phase)), orDash(rd.Status.Progress), readyStatus)
	fmt.Fprintf(&b, "%-8s %3s %-8s %-12s %5s %5s %6s %7s %6s %9s %6s %11s\n",
		"SERVICE", "POS", "TARGET", "PHASE", "QUORUM", "NODES", "ONLINE", "UPDATED", "STAGED", "UPGRADING", "FAILED", "UNREACHABLE")
	var svcs []string
	for _, sp := range rd.Spec.Services {
		svcs = append(svcs, sp.Name)
		st := localstack.ServiceStatus(rd, sp.Name)
		if st == nil {
			fmt.Fprintf(&b, "%-8s %3s %-8s %-12s\n", sp.Name, "-", sp.Version, "(no status yet)")
			continue
		}
		fmt.Fprintf(&b, "%-8s %3d %-8s %-12s %6d %5d %6d %7d %6d %9d %6d %11d\n",
			st.Name, st.Position, st.TargetVersion, orDash(string(st.Phase)), st.MinAvailable, st.Total, st.Online,
			st.Updated, st.Staged, st.Upgrading, st.Failed, st.Unreachable)
		if st.Message != "" {
			fmt.Fprintf(&b, "         %s\n", st.Message)
		}
	}
	fmt.Fprintf(&b, "\n%-8s %-10s", "NODE", "ADDRESS")
	for _, svc := range svcs {
		fmt.Fprintf(&b, " %-28s", svc+" (zookeeper / serves)")
	}
	b.WriteString("\n")
	for _, n := range d.stack.Nodes {
		fmt.Fprintf(&b, "%-8s %-10s", n.Name, n.Address)
		for _, svc := range svcs {
			cell := nodeState(d.stack.Recorder.Online(svc)[n.Name], d.stack.Recorder.Staging(svc)[n.Name])
			fmt.Fprintf(&b, " %-28s", cell+" / "+serving[svc][n.Name])
		}
		b.WriteString("\n")
	}
	if !d.since.IsZero() {
		b.WriteString("\n")
		for _, svc := range svcs {
			min, _, _ := d.stack.Recorder.MinOnline(svc, d.since)
			fmt.Fprintf(&b, "%s: fewest nodes online since the update: %d (quorum %d)\n", svc, min, quorum(rd, svc))
		}
	}
	frame := b.String()
	if d.tty {
		fmt.Fprint(d.out, "\033[H\033[J"+frame+"\n"+time.Now().Format("15:04:05")+"  (recent ZooKeeper changes below)\n"+d.recentEvents(svcs, 8))
		return
	}
	if frame != d.lastFrame {
		fmt.Fprintf(d.out, "\n--- %s\n%s", time.Now().Format("15:04:05.000"), frame)
		d.lastFrame = frame
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nodeState is what ZooKeeper says about one node and service: its registered version and
// its place in the staging queue.
func nodeState(online, staged string) string {
	state, target, _ := strings.Cut(staged, " ")
	switch {
	case state == "upgrading":
		return "upgrading->" + target
	case online == "" && staged == "":
		return "offline"
	case online == "":
		return "offline, staged " + target
	case state == "ready":
		return online + " online, staged " + target
	default:
		return online + " online"
	}
}

// recentEvents renders the last n membership changes of current/ for svcs.
func (d *demo) recentEvents(svcs []string, n int) string {
	type ev struct {
		t    time.Time
		line string
	}
	var evs []ev
	for _, svc := range svcs {
		snaps := d.stack.Recorder.Snapshots(svc, localstack.KindCurrent)
		for i := 1; i < len(snaps); i++ {
			prev, cur := snaps[i-1].Members, snaps[i].Members
			var parts []string
			for node, v := range cur {
				if old, ok := prev[node]; !ok {
					parts = append(parts, node+" joined on "+v)
				} else if old != v {
					parts = append(parts, node+" "+old+"->"+v)
				}
			}
			for node := range prev {
				if _, ok := cur[node]; !ok {
					parts = append(parts, node+" left")
				}
			}
			sort.Strings(parts)
			if len(parts) > 0 {
				evs = append(evs, ev{snaps[i].Time, fmt.Sprintf("  %s  %s: %s (online %d)", snaps[i].Time.Format("15:04:05.000"), svc, strings.Join(parts, ", "), snaps[i].Online())})
			}
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].t.Before(evs[j].t) })
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	var b strings.Builder
	for _, e := range evs {
		b.WriteString(e.line + "\n")
	}
	return b.String()
}

// quorum is svc's minAvailable as a node count: from the status when resolved, else from an
// integer spec value.
func quorum(rd *rkv1alpha1.RollingDeploy, svc string) int {
	if st := localstack.ServiceStatus(rd, svc); st != nil && st.MinAvailable > 0 {
		return int(st.MinAvailable)
	}
	for _, sp := range rd.Spec.Services {
		if sp.Name == svc && sp.Quorum.MinAvailable.Type == 0 {
			return sp.Quorum.MinAvailable.IntValue()
		}
	}
	return 0
}

// verify checks the independent recorder's evidence for the v2 rollout that started at since.
func (d *demo) verify(rd *rkv1alpha1.RollingDeploy, since time.Time) error {
	rec := d.stack.Recorder
	fmt.Fprintln(d.out, "\nWhat the independent ZooKeeper watcher recorded during the v2 rollout:")
	var errs []error
	for _, sp := range rd.Spec.Services {
		q := quorum(d.rd, sp.Name)
		min, at, missed := rec.MinOnline(sp.Name, since)
		fmt.Fprintf(d.out, "  %s: fewest nodes online %d at %s (quorum %d, %d changes not seen one by one)\n",
			sp.Name, min, at.Time.Format("15:04:05.000"), q, missed)
		if q > 0 && min < q {
			errs = append(errs, fmt.Errorf("service %s: only %d nodes online at %s, below its quorum %d: %s",
				sp.Name, min, at.Time.Format("15:04:05.000"), q, localstack.FormatMembers(at.Members)))
		}
	}
	// Dependencies: a dependent's first node to leave for v2 left after its dependency's last
	// node came back on v2. Compared in ZooKeeper's order (zxids): the watcher reads each
	// service on its own, so on a busy machine its observation times can invert two changes.
	for _, sp := range rd.Spec.Services {
		for _, dep := range sp.DependsOn {
			depDone := lastArrival(rec, d.stack, dep, specVersion(rd, dep))
			left := departures(rec, d.stack, sp.Name, since)
			if len(left) == 0 || depDone.Zxid == 0 {
				continue
			}
			fmt.Fprintf(d.out, "  %s finished at %s; %s's first node left for the upgrade at %s\n",
				dep, depDone.Time.Format("15:04:05.000"), sp.Name, left[0].Time.Format("15:04:05.000"))
			for _, l := range left {
				// l.Zxid is exact or an upper bound: below depDone's, the order is proven wrong.
				if l.Zxid < depDone.Zxid {
					errs = append(errs, fmt.Errorf("service %s started upgrading (zxid 0x%x, seen at %s) before %s finished (zxid 0x%x, seen at %s)",
						sp.Name, l.Zxid, l.Time.Format("15:04:05.000"), dep, depDone.Zxid, depDone.Time.Format("15:04:05.000")))
					break
				}
			}
		}
	}
	if rerrs := rec.Errors(); len(rerrs) > 0 {
		fmt.Fprintf(d.out, "  (the watcher met %d errors; first: %v)\n", len(rerrs), rerrs[0])
	}
	return errors.Join(errs...)
}

// specVersion is svc's version in rd's spec ("" if rd has no such service).
func specVersion(rd *rkv1alpha1.RollingDeploy, svc string) string {
	for _, sp := range rd.Spec.Services {
		if sp.Name == svc {
			return sp.Version
		}
	}
	return ""
}

// lastArrival is the last registration of a node of svc on version, in ZooKeeper's order.
func lastArrival(rec *localstack.Recorder, s *localstack.Stack, svc, version string) localstack.VersionChange {
	var last localstack.VersionChange
	for _, n := range s.Nodes {
		for _, h := range rec.History(svc, n.Name) {
			if h.Version == version && h.Zxid > last.Zxid {
				last = h
			}
		}
	}
	return last
}

// departures are the times nodes of svc left current/ after since, in ZooKeeper's order.
func departures(rec *localstack.Recorder, s *localstack.Stack, svc string, since time.Time) []localstack.VersionChange {
	var out []localstack.VersionChange
	for _, n := range s.Nodes {
		for _, h := range rec.History(svc, n.Name) {
			if h.Version == "" && h.Time.After(since) {
				out = append(out, h)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Zxid < out[j].Zxid })
	return out
}

// plugin is the kubectl plugin to suggest: `kubectl rollkeeper` when kubectl finds it on PATH,
// else bin/kubectl-rollkeeper (make build).
func plugin() string {
	if _, err := exec.LookPath("kubectl-rollkeeper"); err == nil {
		if _, err := exec.LookPath("kubectl"); err == nil {
			return "kubectl rollkeeper"
		}
	}
	if root, err := localstack.RepoRoot(); err == nil {
		return filepath.Join(root, "bin", "kubectl-rollkeeper")
	}
	return "kubectl rollkeeper"
}

// kubectl is the kubectl to suggest: the one on PATH, else bin/kubectl (make kubectl).
func kubectl() string {
	if _, err := exec.LookPath("kubectl"); err == nil {
		return "kubectl"
	}
	if root, err := localstack.RepoRoot(); err == nil {
		p := filepath.Join(root, "bin", "kubectl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "kubectl"
}

// dashboardPort is where the demo serves the dashboard (a free port when it is taken).
const dashboardPort = 3100

// startDashboard serves the stack's dashboard in this process, as `kubectl rollkeeper
// dashboard` would, until stopDashboard, and prints its address: open it to watch the rollout.
// A dashboard that cannot start is reported and the demo goes on without it.
func (d *demo) startDashboard(ctx context.Context) {
	d.stopDashboard = func() {}
	ctrllog.SetLogger(logr.Discard()) // the informers log through controller-runtime; the demo prints its progress
	cfg, err := clientcmd.BuildConfigFromFlags("", d.stack.Kubeconfig)
	if err != nil {
		fmt.Fprintf(d.out, "No dashboard: %v\n", err)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	for _, port := range []int{dashboardPort, 0} {
		ready, done := make(chan string, 1), make(chan error, 1)
		go func() {
			done <- dashboard.Run(ctx, cfg, dashboard.Options{Port: port, Log: logr.Discard(), Ready: func(u string) { ready <- u }})
		}()
		select {
		case u := <-ready:
			d.dashboardURL = u
			d.stopDashboard = func() { cancel(); <-done }
			fmt.Fprintf(d.out, "Dashboard: %s  (open it in a browser to watch the rollout live)\n", u)
			return
		case err = <-done:
		}
	}
	cancel()
	fmt.Fprintf(d.out, "No dashboard: %v\n", err)
}

// explain prints how to poke the running stack.
func (d *demo) explain() {
	s := d.stack
	w := d.out
	fmt.Fprintln(w, "\nThe stack keeps running. Poke it from another terminal:")
	fmt.Fprintf(w, "  export KUBECONFIG=%s\n", s.Kubeconfig)
	k := kubectl()
	fmt.Fprintf(w, "  %s get rd                       # phase and progress\n", k)
	fmt.Fprintf(w, "  %s get rd demo -o yaml          # per-service status and conditions\n", k)
	fmt.Fprintf(w, "  %s get nodes --show-labels\n", k)
	fmt.Fprintf(w, "  %s edit rd demo                 # e.g. set paused: true, or change a version\n", k)
	fmt.Fprintf(w, "  %s status demo           # per node, as the plugin sees it\n", plugin())
	if d.dashboardURL != "" {
		fmt.Fprintf(w, "  dashboard: %s  (the same page: %s dashboard --port %d)\n", d.dashboardURL, plugin(), dashboardPort+1)
	} else {
		fmt.Fprintf(w, "  %s dashboard               # a live page of the rollout, then open http://127.0.0.1:%d/\n", plugin(), dashboardPort)
	}
	if k == "kubectl" {
		if _, err := exec.LookPath("kubectl"); err != nil {
			fmt.Fprintln(w, "  (no kubectl here: `make kubectl` builds bin/kubectl from source)")
		}
	}
	fmt.Fprintf(w, "\n  ZooKeeper: %s (rollkeeper root %s)\n", s.ZKServers, s.Layout.Root())
	cli := "/usr/share/zookeeper/bin/zkCli.sh"
	if _, err := os.Stat(cli); err != nil {
		cli = `java -cp "/usr/share/java/zookeeper.jar:/usr/share/java/*" org.apache.zookeeper.ZooKeeperMain`
	}
	fmt.Fprintf(w, "  %s -server %s ls -R %s\n", cli, s.ZKServers, s.Layout.Root())
	for _, sp := range d.rd.Spec.Services {
		fmt.Fprintf(w, "  %s -server %s get %s\n", cli, s.ZKServers, s.Layout.CurrentNode(sp.Name, s.Nodes[0].Name))
	}
	fmt.Fprintln(w, "\n  The nodes' services:")
	for _, sp := range d.rd.Spec.Services {
		port := servicePort(d.rd, sp.Name)
		fmt.Fprintf(w, "  curl %s      # %s on %s\n", s.Nodes[0].URL(port, "/version"), sp.Name, s.Nodes[0].Name)
	}
	fmt.Fprintf(w, "\n  Logs: %s/logs (operator.log, node-N.log); node state dirs: %s/nodes\n", s.Dir, s.Dir)
	fmt.Fprintf(w, "  Stop or crash a node's agent yourself: kill %d (node-1's agent pid)\n\n", s.Nodes[0].Agent.Pid())
}
