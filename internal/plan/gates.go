package plan

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Gates are a service's gates beyond the quorum, resolved for its plan.
type Gates struct {
	MaxUnavailable    int
	MinHealthySeconds int
	// Canary, CanaryBakeSeconds: the canary phase (0: none); Promoted is set by the caller,
	// from the RollingDeploy's promote annotation.
	Canary, CanaryBakeSeconds int
	Promoted                  bool
	MaxFailures               int
	PreStopCheck              *zklayout.StopCheck
	AlertGate                 *zklayout.AlertGate
	Topology                  *zklayout.Topology
	Windows                   []zklayout.Window
}

// Strategy is the service's strategy: the RollingDeploy's, with each field the service sets
// in its place.
func Strategy(spec v1alpha1.RollingDeploySpec, s v1alpha1.ServiceSpec) v1alpha1.StrategySpec {
	var out v1alpha1.StrategySpec
	if spec.Strategy != nil {
		out = *spec.Strategy
	}
	if o := s.Strategy; o != nil {
		override(&out.MaxUnavailable, o.MaxUnavailable)
		override(&out.Topology, o.Topology)
		override(&out.Canary, o.Canary)
		override(&out.MaxFailures, o.MaxFailures)
		override(&out.PreStopCheck, o.PreStopCheck)
		override(&out.AlertGate, o.AlertGate)
		override(&out.MinHealthyTime, o.MinHealthyTime)
		if o.MaintenanceWindows != nil {
			// An empty list in the service says: no windows for it.
			out.MaintenanceWindows = o.MaintenanceWindows
		}
	}
	return out
}

// Promoted reports whether a RollingDeploy's annotations promote version of service past its
// canary phase (kubectl rollkeeper promote): the annotation names the version it promotes, so a
// later version has a canary phase again.
func Promoted(annotations map[string]string, service, version string) bool {
	return annotations[v1alpha1.AnnotationPromotePrefix+service] == version
}

// override replaces *dst with v when the service sets v.
func override[T any](dst **T, v *T) {
	if v != nil {
		*dst = v
	}
}

// validateStrategy checks what the schema cannot: the topology key's syntax, the windows' time
// zones (the API server does not know the zone database).
func validateStrategy(field string, st *v1alpha1.StrategySpec) []string {
	if st == nil {
		return nil
	}
	var problems []string
	if st.MaxUnavailable != nil {
		if _, err := gateValue("maxUnavailable", *st.MaxUnavailable, 1); err != nil {
			problems = append(problems, fmt.Sprintf("%s.%v", field, err))
		}
	}
	if c := st.Canary; c != nil {
		if _, err := gateValue("canary.nodes", c.Nodes, 1); err != nil {
			problems = append(problems, fmt.Sprintf("%s.%v", field, err))
		}
	}
	if f := st.MaxFailures; f != nil {
		if _, err := gateValue("maxFailures", *f, 0); err != nil {
			problems = append(problems, fmt.Sprintf("%s.%v", field, err))
		}
	}
	if t := st.Topology; t != nil {
		if errs := validation.IsQualifiedName(t.Key); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("%s.topology.key %q is not a label key: %s", field, t.Key, strings.Join(errs, "; ")))
		}
		if t.MinAvailablePerDomain != nil {
			if _, err := gateValue("topology.minAvailablePerDomain", *t.MinAvailablePerDomain, 0); err != nil {
				problems = append(problems, fmt.Sprintf("%s.%v", field, err))
			}
		}
	}
	if d := st.MinHealthyTime; d != nil && (d.Duration < 0 || d.Duration > zklayout.MaxMinHealthySeconds*time.Second) {
		problems = append(problems, fmt.Sprintf("%s.minHealthyTime %s is outside 0s..24h", field, d.Duration))
	}
	if len(st.MaintenanceWindows) > zklayout.MaxWindows {
		problems = append(problems, fmt.Sprintf("%s.maintenanceWindows: %d windows, at most %d", field, len(st.MaintenanceWindows), zklayout.MaxWindows))
	}
	for i, w := range st.MaintenanceWindows {
		if err := window(w).Validate(); err != nil {
			problems = append(problems, fmt.Sprintf("%s.maintenanceWindows[%d]: %v", field, i, err))
		}
	}
	return problems
}

// gateValue is an int-or-percent of at least lo (a percentage: 0..100).
func gateValue(field string, v intstr.IntOrString, lo int) (int, error) {
	if v.Type == intstr.Int {
		if int(v.IntVal) < lo {
			return 0, fmt.Errorf("%s %d is less than %d", field, v.IntVal, lo)
		}
		return int(v.IntVal), nil
	}
	var pct int
	if _, err := fmt.Sscanf(v.StrVal, "%d%%", &pct); err != nil || fmt.Sprintf("%d%%", pct) != v.StrVal || pct < lo || pct > 100 {
		return 0, fmt.Errorf("%s %q is neither an integer nor a percentage between %d%% and 100%%", field, v.StrVal, lo)
	}
	return pct, nil
}

func window(w v1alpha1.MaintenanceWindow) zklayout.Window {
	tz := w.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	out := zklayout.Window{Start: w.Start, End: w.End, TimeZone: tz}
	for _, d := range w.Days {
		out.Days = append(out.Days, string(d))
	}
	return out
}

// ResolveGates resolves a service's strategy against its selected nodes: nodeLabels are the
// labels of each selected Node. maxUnavailable percentages round down (at least 1), per-domain
// quorums up, like minAvailable.
func ResolveGates(st v1alpha1.StrategySpec, nodeLabels []map[string]string) (Gates, error) {
	var g Gates
	if st.MaxUnavailable != nil {
		v, err := gateValue("maxUnavailable", *st.MaxUnavailable, 1)
		if err != nil {
			return g, err
		}
		if st.MaxUnavailable.Type == intstr.String {
			v = max(1, v*len(nodeLabels)/100)
		}
		g.MaxUnavailable = v
	}
	if t := st.Topology; t != nil {
		per := int(t.MaxUnavailablePerDomain)
		if per < 1 {
			per = 1 // the schema's default, for objects built in Go
		}
		g.Topology = &zklayout.Topology{Key: t.Key, MaxUnavailablePerDomain: per}
		if t.MinAvailablePerDomain != nil {
			size := map[string]int{}
			for _, l := range nodeLabels {
				size[l[t.Key]]++
			}
			if len(size) > zklayout.MaxDomains {
				return g, fmt.Errorf("topology.key %s has %d values among the selected nodes, at most %d domains", t.Key, len(size), zklayout.MaxDomains)
			}
			names := make([]string, 0, len(size))
			for d := range size {
				names = append(names, d)
			}
			// In name order, every domain too small named: the same spec gives the same message.
			sort.Strings(names)
			var small []string
			for _, d := range names {
				m, err := ResolveQuorum(*t.MinAvailablePerDomain, size[d])
				if err != nil {
					small = append(small, fmt.Sprintf("domain %q has %d node(s)", d, size[d]))
					continue
				}
				g.Topology.Domains = append(g.Topology.Domains, zklayout.DomainQuorum{Name: d, MinAvailable: m})
			}
			if len(small) > 0 {
				return g, fmt.Errorf("topology.minAvailablePerDomain %s is larger than a domain of %s among the selected nodes: %s",
					t.MinAvailablePerDomain.String(), t.Key, strings.Join(small, ", "))
			}
		}
	}
	if c := st.Canary; c != nil {
		v, err := gateValue("canary.nodes", c.Nodes, 1)
		if err != nil {
			return g, err
		}
		if c.Nodes.Type == intstr.String {
			v = max(1, (v*len(nodeLabels)+99)/100)
		}
		g.Canary = v
		if b := c.BakeTime; b != nil {
			if b.Duration < 0 || b.Duration > zklayout.MaxBakeSeconds*time.Second {
				return g, fmt.Errorf("canary.bakeTime %s is outside 0s..168h", b.Duration)
			}
			g.CanaryBakeSeconds = max(1, int((b.Duration+time.Second-1)/time.Second))
		}
	}
	if f := st.MaxFailures; f != nil {
		v, err := gateValue("maxFailures", *f, 0)
		if err != nil {
			return g, err
		}
		if f.Type == intstr.String {
			v = v * len(nodeLabels) / 100
		}
		g.MaxFailures = v
	}
	if c := st.PreStopCheck; c != nil {
		sc := &zklayout.StopCheck{TimeoutSeconds: atLeast1(c.TimeoutSeconds, 5), PeriodSeconds: atLeast1(c.PeriodSeconds, 10)}
		switch {
		case c.HTTPGet != nil:
			path, scheme := c.HTTPGet.Path, c.HTTPGet.Scheme
			if path == "" {
				path = "/"
			}
			if scheme == "" {
				scheme = "HTTP"
			}
			sc.HTTPGet = &zklayout.HTTPGet{Host: c.HTTPGet.Host, Path: path, Port: int(c.HTTPGet.Port), Scheme: scheme}
		case c.Exec != nil:
			sc.Exec = &zklayout.Exec{Command: append([]string(nil), c.Exec.Command...)}
		}
		g.PreStopCheck = sc
	}
	if a := st.AlertGate; a != nil {
		g.AlertGate = &zklayout.AlertGate{URL: a.URL, Query: a.Query, PeriodSeconds: atLeast1(a.PeriodSeconds, 15)}
	}
	if d := st.MinHealthyTime; d != nil {
		if d.Duration < 0 || d.Duration > zklayout.MaxMinHealthySeconds*time.Second {
			return g, fmt.Errorf("minHealthyTime %s is outside 0s..24h", d.Duration)
		}
		g.MinHealthySeconds = int((d.Duration + time.Second - 1) / time.Second)
	}
	for _, w := range st.MaintenanceWindows {
		g.Windows = append(g.Windows, window(w))
	}
	return g, nil
}

// sameGates reports whether two plans carry the same gates.
func sameGates(a, b zklayout.Plan) bool {
	return a.MaxUnavailable == b.MaxUnavailable && a.MinHealthySeconds == b.MinHealthySeconds && a.Canary == b.Canary &&
		a.MaxFailures == b.MaxFailures &&
		a.CanaryBakeSeconds == b.CanaryBakeSeconds && a.Promoted == b.Promoted && reflect.DeepEqual(a.PreStopCheck, b.PreStopCheck) &&
		reflect.DeepEqual(a.AlertGate, b.AlertGate) && reflect.DeepEqual(a.Topology, b.Topology) &&
		(len(a.Windows) == 0 && len(b.Windows) == 0 || reflect.DeepEqual(a.Windows, b.Windows))
}
