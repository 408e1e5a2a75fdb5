package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/dryrun"
	"github.com/rollkeeper/rollkeeper/internal/nodestate"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/rdctl"
	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// stdin is what `plan -f -` reads (a variable so tests can feed it).
var stdin io.Reader = os.Stdin

// maxManifest bounds what plan reads: a RollingDeploy is at most a few hundred KB.
const maxManifest = 8 << 20

// loadManifest reads the one RollingDeploy of file ("-": in) and checks its spec as the
// operator would (plan.Validate), before anything talks to the cluster. Other kinds of
// objects in the file are skipped; two RollingDeploys are an error (plan one at a time).
func loadManifest(file string, in io.Reader) (*v1alpha1.RollingDeploy, error) {
	src := file
	var r io.Reader
	if file == "-" {
		src, r = "stdin", in
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("read manifest: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", src, err)
	}
	if len(data) > maxManifest {
		return nil, fmt.Errorf("manifest %s is larger than %d MiB", src, maxManifest>>20)
	}
	var found []*v1alpha1.RollingDeploy
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read manifest %s: %w", src, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err == nil && (len(bytes.TrimSpace(j)) == 0 || string(bytes.TrimSpace(j)) == "null") {
			continue // an empty document: comments, or a trailing ---
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("manifest %s, document %d: %w", src, i, err)
		}
		if tm.Kind != "RollingDeploy" {
			continue
		}
		if tm.APIVersion != v1alpha1.GroupVersion.String() {
			return nil, fmt.Errorf("manifest %s, document %d: apiVersion %q: this plugin reads RollingDeploys of %s",
				src, i, tm.APIVersion, v1alpha1.GroupVersion)
		}
		rd := &v1alpha1.RollingDeploy{}
		// Strict, like kubectl apply's default field validation: a misspelt field is an error,
		// not a gate silently left out of the plan.
		if err := yaml.UnmarshalStrict(doc, rd); err != nil {
			return nil, fmt.Errorf("manifest %s, document %d: %w", src, i, err)
		}
		found = append(found, rd)
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("manifest %s holds no RollingDeploy (apiVersion %s, kind RollingDeploy)", src, v1alpha1.GroupVersion)
	case len(found) > 1:
		var names []string
		for _, rd := range found {
			names = append(names, rd.Name)
		}
		return nil, fmt.Errorf("manifest %s holds %d RollingDeploys (%s): plan one at a time", src, len(found), strings.Join(names, ", "))
	}
	rd := found[0]
	if rd.Name == "" {
		return nil, fmt.Errorf("manifest %s: the RollingDeploy has no metadata.name", src)
	}
	if err := plan.Validate(rd.Spec); err != nil {
		return nil, fmt.Errorf("rollingdeploy %s: %w", rd.Name, err)
	}
	return rd, nil
}

// planNode is one selected node of a service in the dry run.
type planNode struct {
	name, domain string
	// entry is the node's mirrored state (nil: unknown).
	entry *v1alpha1.NodeEntry
	// wave is the node's wave, from 1 (0: none; why says why).
	wave int
	why  string
}

// servicePlan is what applying the manifest would do to one service.
type servicePlan struct {
	spec         v1alpha1.ServiceSpec
	strategy     v1alpha1.StrategySpec
	selector     string
	nodes        []planNode
	minAvailable int
	gates        plan.Gates
	deploy       string
	// problems make the operator refuse the RollingDeploy (Stalled): no waves then.
	problems []string
	waves    dryrun.Result
	// mirror is the live RollingDeploy's mirror of the service (nil: none).
	mirror *nodestate.Service
	// perWave and how are the estimate of one wave and how it was made.
	perWave time.Duration
	how     string
	// window says when a closed maintenance window opens ("" without windows).
	window       string
	windowClosed bool
}

func (s *servicePlan) estimate() time.Duration { return time.Duration(len(s.waves.Waves)) * s.perWave }

// stuck says why the service's rollout would not finish ("" if it would).
func (s *servicePlan) stuck() string {
	switch {
	case s.waves.NoRoom != "":
		return s.waves.NoRoom
	case s.waves.Blocked != nil:
		return fmt.Sprintf("domain %s is blocked by its quorum", s.domainName(s.waves.Blocked.Domain))
	}
	return ""
}

// domainName names a failure domain for a person.
func (s *servicePlan) domainName(d string) string {
	if d == "" && s.gates.Topology != nil {
		return "nodes without " + s.gates.Topology.Key
	}
	return d
}

// planDeploy prints what applying rd would do, from the live Nodes, RollingDeploy and
// RollingDeployNodeSets; it writes nothing. rd passed loadManifest. The operator refusing rd
// against this cluster (a quorum larger than the nodes selected, say) is an error, after the
// plan is printed.
func (p *plugin) planDeploy(ctx context.Context, rd *v1alpha1.RollingDeploy) error {
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	order, err := plan.TopoOrder(rd.Spec.Services)
	if err != nil {
		return fmt.Errorf("rollingdeploy %s: %w", rd.Name, err)
	}
	// Metadata only, like the operator: labels are all a selector needs.
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := p.c.List(ctx, nodes); err != nil {
		return fmt.Errorf("list Nodes: %w", err)
	}
	live, err := p.get(ctx, rd.Name)
	if errors.Is(err, rdctl.ErrNotFound) {
		live, err = nil, nil
	}
	if err != nil {
		return err
	}
	var mirror map[string]*nodestate.Service
	if live != nil {
		if mirror, err = p.nodes(ctx, live); err != nil {
			return err
		}
	}
	var svcs []*servicePlan
	var problems []string
	for _, name := range order {
		spec, _ := plan.ServiceByName(rd.Spec, name)
		s, err := planService(rd, spec, nodes.Items, live, mirror[name], now)
		if err != nil {
			return err
		}
		svcs = append(svcs, s)
		for _, pr := range s.problems {
			problems = append(problems, fmt.Sprintf("service %s: %s", name, pr))
		}
	}
	renderPlan(p.out, rd, live, order, svcs)
	if len(problems) > 0 {
		return fmt.Errorf("the operator would refuse rollingdeploy %s (Stalled, %s): %s",
			rd.Name, v1alpha1.ReasonQuorumUnreachable, strings.Join(problems, "; "))
	}
	return nil
}

// planService works out one service: its nodes as the operator's resolveNodes selects them,
// its quorum and gates, its waves from the mirrored node states, and the estimate.
func planService(rd *v1alpha1.RollingDeploy, spec v1alpha1.ServiceSpec, nodes []metav1.PartialObjectMetadata,
	live *v1alpha1.RollingDeploy, mirror *nodestate.Service, now time.Time) (*servicePlan, error) {
	s := &servicePlan{spec: spec, strategy: plan.Strategy(rd.Spec, spec), mirror: mirror}
	sel := labels.Everything()
	if spec.NodeSelector != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(spec.NodeSelector); err != nil {
			return nil, fmt.Errorf("service %s nodeSelector: %w", spec.Name, err) // Validate checked it
		}
		s.selector = sel.String()
	}
	var picked []map[string]string
	for i := range nodes {
		if sel.Matches(labels.Set(nodes[i].Labels)) {
			picked = append(picked, nodes[i].Labels)
			s.nodes = append(s.nodes, planNode{name: nodes[i].Name})
		}
	}
	var err error
	if s.minAvailable, err = plan.ResolveQuorum(spec.Quorum.MinAvailable, len(picked)); err != nil {
		s.problems = append(s.problems, err.Error())
	}
	if s.gates, err = plan.ResolveGates(s.strategy, picked); err != nil {
		s.problems = append(s.problems, "strategy: "+err.Error())
	}
	// Promoted as the operator judges it: the annotation names this version (on the live
	// object, or in the manifest).
	s.deploy = rd.Name
	s.gates.Promoted = s.gates.Canary > 0 && (plan.Promoted(rd.Annotations, spec.Name, spec.Version) ||
		live != nil && plan.Promoted(live.Annotations, spec.Name, spec.Version))
	entries := map[string]*v1alpha1.NodeEntry{}
	if mirror != nil {
		for i := range mirror.Nodes {
			entries[mirror.Nodes[i].Name] = &mirror.Nodes[i]
		}
	}
	var online []dryrun.Node
	for i := range s.nodes {
		n := &s.nodes[i]
		if t := s.gates.Topology; t != nil {
			n.domain = picked[i][t.Key]
		}
		n.entry = entries[n.name]
		switch e := n.entry; {
		case e == nil:
			// Unknown (no RollingDeploy, or not mirrored yet): assumed online on another
			// version, the case that asks the most of the rollout.
			online = append(online, dryrun.Node{Name: n.name, Domain: n.domain})
		case e.Online:
			online = append(online, dryrun.Node{Name: n.name, Domain: n.domain, OnTarget: e.Version == spec.Version})
		default:
			n.why = "down"
		}
	}
	sort.Slice(s.nodes, func(i, j int) bool { return s.nodes[i].name < s.nodes[j].name })
	if len(s.problems) > 0 {
		for i := range s.nodes {
			if s.nodes[i].why == "" {
				s.nodes[i].why = "refused"
			}
		}
		return s, nil
	}
	canary := s.gates.Canary
	if s.gates.Promoted {
		canary = 0
	}
	s.waves = dryrun.Waves(dryrun.Input{Online: online, MinAvailable: s.minAvailable,
		MaxUnavailable: s.gates.MaxUnavailable, Topology: s.gates.Topology, Canary: canary})
	wave, why := map[string]int{}, map[string]string{}
	for i, w := range s.waves.Waves {
		for _, n := range w.Nodes {
			wave[n] = i + 1
		}
	}
	for _, n := range s.waves.Skipped {
		why[n] = "on " + spec.Version
	}
	if b := s.waves.Blocked; b != nil {
		for _, n := range b.Nodes {
			why[n] = "blocked"
		}
	}
	for _, n := range s.waves.Held {
		why[n] = "held"
	}
	for i := range s.nodes {
		n := &s.nodes[i]
		n.wave = wave[n.name]
		switch {
		case why[n.name] != "":
			n.why = why[n.name]
		case n.wave == 0 && n.why == "" && s.waves.NoRoom != "":
			n.why = "no room"
		}
	}
	s.estimateWave(live)
	if len(s.gates.Windows) > 0 {
		wait, at := rollout.Window(&zklayout.Plan{Windows: s.gates.Windows}, now)
		switch {
		case wait == "":
			s.window = "a maintenance window is open now; a wave that would start after it closes waits for the next one (not in the estimate)"
		case at.IsZero():
			s.window, s.windowClosed = "closed, and "+wait+": no wave starts", true
		default:
			s.window, s.windowClosed = fmt.Sprintf("closed now: starts when the %s (in %s)", wait, human(at.Sub(now))), true
		}
	}
	return s, nil
}

// estimateWave sets the time one wave takes: the last rollout's, when the live RollingDeploy
// rolled the service out before and its mirror carries registration times; else a default.
func (s *servicePlan) estimateWave(live *v1alpha1.RollingDeploy) {
	reason := ""
	switch {
	case live == nil:
		reason = "no RollingDeploy of this name yet"
	case s.mirror == nil:
		reason = "the service is not mirrored in the live RollingDeploy"
	default:
		var last *v1alpha1.ServiceStatus
		for i := range live.Status.Services {
			if live.Status.Services[i].Name == s.spec.Name {
				last = &live.Status.Services[i]
			}
		}
		if last == nil {
			reason = "the live RollingDeploy's status has no such service"
			break
		}
		var since []time.Time
		for _, e := range s.mirror.Nodes {
			if e.Online && e.Version == last.TargetVersion && e.Since != nil {
				since = append(since, e.Since.Time)
			}
		}
		if d, gaps := dryrun.WaveTime(since); gaps > 0 {
			s.perWave = d
			s.how = fmt.Sprintf("median gap between consecutive nodes' registrations of %s (the last rollout's target) over %d gap(s): "+
				"one node's stop, start, health check and that rollout's minHealthyTime; rough", last.TargetVersion, gaps)
			return
		}
		reason = fmt.Sprintf("fewer than two nodes registered %s at distinct times", last.TargetVersion)
	}
	health := time.Duration(s.gates.MinHealthySeconds) * time.Second
	s.perWave = dryrun.DefaultWave + health
	s.how = fmt.Sprintf("no previous rollout to estimate from (%s): assumed %s per wave plus minHealthyTime %s",
		reason, human(dryrun.DefaultWave), human(health))
}

// renderPlan writes the dry run: a header, the order, each service, the total.
func renderPlan(w io.Writer, rd *v1alpha1.RollingDeploy, live *v1alpha1.RollingDeploy, order []string, svcs []*servicePlan) {
	fmt.Fprintf(w, "RollingDeploy %s (dry run: nothing is changed)\n", rd.Name)
	if live == nil {
		fmt.Fprintf(w, "  no RollingDeploy %s in the cluster yet: node states unknown (counted online, not on the target)\n", rd.Name)
	} else {
		phase := string(live.Status.Phase)
		if phase == "" {
			phase = "Unknown"
		}
		fmt.Fprintf(w, "  live RollingDeploy %s: %s, %s nodes updated; node states from its mirror\n", rd.Name, phase, orDash(live.Status.Progress))
		if c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionAborted); (c != nil && c.Status == metav1.ConditionTrue) ||
			live.Annotations[v1alpha1.AnnotationAborted] != "" {
			fmt.Fprintf(w, "  ABORTED (annotation %s): no node starts an upgrade whatever the manifest says, until the annotation is removed\n",
				v1alpha1.AnnotationAborted)
		}
	}
	if rd.Spec.Paused {
		fmt.Fprintln(w, "  PAUSED: spec.paused is true: no node starts an upgrade until it is resumed; the estimate counts from then")
	}
	fmt.Fprintf(w, "order: %s\n", strings.Join(order, " -> "))
	var total time.Duration
	stuckAt, stuckWhy, windows := "", "", []string{}
	for _, s := range svcs {
		fmt.Fprintln(w)
		renderServicePlan(w, s)
		total += s.estimate()
		if stuckAt == "" && len(s.problems) == 0 {
			if why := s.stuck(); why != "" {
				stuckAt, stuckWhy = s.spec.Name, why
			}
		}
		if s.windowClosed {
			windows = append(windows, s.spec.Name)
		}
	}
	fmt.Fprintln(w)
	refused := 0
	for _, s := range svcs {
		if len(s.problems) > 0 {
			refused++
		}
	}
	switch {
	case refused > 0:
		fmt.Fprintf(w, "total estimate: none: the operator would refuse this RollingDeploy (%d service(s) with a PROBLEM above)\n", refused)
	case stuckAt != "":
		fmt.Fprintf(w, "total estimate: none: the rollout would stop at service %s (%s); the services after it would not start\n", stuckAt, stuckWhy)
	default:
		line := fmt.Sprintf("total estimate: ~%s (services go one after another: the deploy queue; downloads before the first wave not counted", human(total))
		if len(windows) > 0 {
			line += "; plus the wait for the maintenance window of " + strings.Join(windows, ", ")
		}
		fmt.Fprintln(w, line+")")
	}
}

// renderServicePlan writes one service: nodes, quorum, gates, waves, estimate, node table.
func renderServicePlan(w io.Writer, s *servicePlan) {
	online, unknown := 0, 0
	var down []string
	for _, n := range s.nodes {
		switch {
		case n.entry == nil:
			unknown++
		case n.entry.Online:
			online++
		default:
			down = append(down, n.name)
		}
	}
	line := fmt.Sprintf("SERVICE %s  target %s  %d node(s) selected, %d online", s.spec.Name, s.spec.Version, len(s.nodes), online)
	if len(down) > 0 {
		line += fmt.Sprintf(", %d not online (%s)", len(down), strings.Join(down, ", "))
	}
	if unknown > 0 {
		line += fmt.Sprintf(", %d state unknown", unknown)
	}
	line += fmt.Sprintf("  minAvailable %d", s.minAvailable)
	if q := s.spec.Quorum.MinAvailable; q.Type == intstr.String {
		line += fmt.Sprintf(" (%s of %d)", q.StrVal, len(s.nodes))
	}
	fmt.Fprintln(w, line)
	if s.selector == "" {
		fmt.Fprintln(w, "  nodeSelector: every node")
	} else {
		fmt.Fprintf(w, "  nodeSelector: %s\n", s.selector)
	}
	if unknown > 0 {
		fmt.Fprintf(w, "  state unknown (not mirrored): %d node(s), counted online and not on %s\n", unknown, s.spec.Version)
	}
	if s.mirror != nil && s.mirror.Incomplete {
		fmt.Fprintln(w, "  (the operator is rewriting the node list: some node states may be missing or stale)")
	}
	for _, p := range s.problems {
		fmt.Fprintf(w, "  PROBLEM: %s\n", p)
	}
	if len(s.problems) == 0 {
		fmt.Fprintf(w, "  gates: %s\n", s.gatesLine())
		if s.window != "" {
			fmt.Fprintf(w, "  window: %s\n", s.window)
		}
		r := s.waves
		for i, wv := range r.Waves {
			where := ""
			if s.gates.Topology != nil {
				where = " (" + s.domainName(wv.Domain) + ")"
			}
			fmt.Fprintf(w, "  wave %d%s: %s\n", i+1, where, strings.Join(wv.Nodes, ", "))
			if i+1 == r.CanaryWaves && i+1 < len(r.Waves) {
				if s.gates.CanaryBakeSeconds > 0 {
					fmt.Fprintf(w, "  (canary: the service waits until these ran %s for %s, then goes on)\n", s.spec.Version, time.Duration(s.gates.CanaryBakeSeconds)*time.Second)
				} else {
					fmt.Fprintf(w, "  (canary: the service waits for kubectl rollkeeper promote %s)\n", s.deploy)
				}
			}
		}
		if r.NoRoom != "" {
			fmt.Fprintf(w, "  %s\n", r.NoRoom)
		}
		if b := r.Blocked; b != nil {
			fmt.Fprintf(w, "  blocked: domain %s: %d node(s) online, minAvailablePerDomain %d: none of its %d node(s) to upgrade can go (%s)\n",
				s.domainName(b.Domain), b.Online, b.MinAvailable, len(b.Nodes), strings.Join(b.Nodes, ", "))
		}
		if len(r.Held) > 0 {
			fmt.Fprintf(w, "  held: %d node(s) of later domains wait behind it, domains go in name order (%s)\n", len(r.Held), strings.Join(r.Held, ", "))
		}
		if len(r.Skipped) > 0 {
			fmt.Fprintf(w, "  skipped, already on %s: %s\n", s.spec.Version, strings.Join(r.Skipped, ", "))
		}
		switch {
		case len(r.Waves) > 0:
			fmt.Fprintf(w, "  estimate: %d wave(s) x ~%s = ~%s (per wave: %s)\n", len(r.Waves), human(s.perWave), human(s.estimate()), s.how)
		case r.NoRoom != "" || r.Blocked != nil:
			fmt.Fprintln(w, "  estimate: none: no wave can go")
		default:
			fmt.Fprintf(w, "  estimate: nothing to upgrade: every online node runs %s\n", s.spec.Version)
		}
		if len(down) > 0 {
			fmt.Fprintln(w, "  (nodes not online are in no wave: each upgrades once it is back and its turn comes)")
		}
	}
	renderPlanNodes(w, s)
}

// renderPlanNodes writes one row per selected node: its domain (with a topology), the version
// it runs now and its state when known, and its wave or why it has none.
func renderPlanNodes(w io.Writer, s *servicePlan) {
	if len(s.nodes) == 0 {
		return
	}
	topo := s.gates.Topology != nil
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	header := []string{"  NODE", "VERSION", "STATE", "WAVE"}
	if topo {
		header = []string{"  NODE", "DOMAIN", "VERSION", "STATE", "WAVE"}
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, n := range s.nodes {
		version, state := "?", "unknown"
		if e := n.entry; e != nil {
			version, state = orDash(e.Version), string(e.State)
		}
		wave := "-"
		if n.wave > 0 {
			wave = fmt.Sprint(n.wave)
		} else if n.why != "" {
			wave = "- (" + n.why + ")"
		}
		row := []string{"  " + n.name, version, state, wave}
		if topo {
			domain := n.domain
			if domain == "" {
				domain = "(no label)"
			}
			row = []string{"  " + n.name, domain, version, state, wave}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	_ = tw.Flush()
}

// gatesLine sums up the resolved gates ("none beyond the quorum" without any).
func (s *servicePlan) gatesLine() string {
	g := s.gates
	var parts []string
	if g.MaxUnavailable > 0 {
		p := fmt.Sprintf("maxUnavailable %d", g.MaxUnavailable)
		if mu := s.strategy.MaxUnavailable; mu != nil && mu.Type == intstr.String {
			p += fmt.Sprintf(" (%s of %d)", mu.StrVal, len(s.nodes))
		}
		parts = append(parts, p)
	}
	if t := g.Topology; t != nil {
		p := fmt.Sprintf("by %s, %d node(s) per domain, one domain at a time in name order", t.Key, t.MaxUnavailablePerDomain)
		if len(t.Domains) > 0 {
			var ds []string
			for _, d := range t.Domains {
				ds = append(ds, fmt.Sprintf("%s: %d", s.domainName(d.Name), d.MinAvailable))
			}
			p += "; minAvailablePerDomain " + strings.Join(ds, ", ")
		}
		parts = append(parts, p)
	}
	if g.MinHealthySeconds > 0 {
		parts = append(parts, "minHealthyTime "+human(time.Duration(g.MinHealthySeconds)*time.Second))
	}
	if g.Canary > 0 {
		p := fmt.Sprintf("canary %d", g.Canary)
		switch {
		case g.Promoted:
			p += " (promoted)"
		case g.CanaryBakeSeconds > 0:
			p += ", promoted after " + human(time.Duration(g.CanaryBakeSeconds)*time.Second) + " healthy"
		}
		parts = append(parts, p)
	}
	if g.MaxFailures > 0 {
		parts = append(parts, fmt.Sprintf("maxFailures %d", g.MaxFailures))
	}
	if g.PreStopCheck != nil {
		parts = append(parts, "preStopCheck on each node (not modelled: it may hold a node)")
	}
	if g.AlertGate != nil {
		parts = append(parts, fmt.Sprintf("alertGate %s (not asked here: it may hold every node)", g.AlertGate.Query))
	}
	for _, win := range g.Windows {
		days := "daily"
		if len(win.Days) > 0 {
			days = strings.Join(win.Days, ",")
		}
		parts = append(parts, fmt.Sprintf("window %s %s-%s %s", days, win.Start, win.End, win.TimeZone))
	}
	if len(parts) == 0 {
		return "none beyond the quorum"
	}
	return strings.Join(parts, "; ")
}

// human renders a duration to the second, without trailing zero units ("1h2m", "40s").
func human(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
