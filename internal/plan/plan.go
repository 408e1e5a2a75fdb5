// Package plan is rollkeeper's pure rollout logic: it checks a RollingDeploy spec for what the
// API server's schema cannot, orders services by their dependencies, resolves quorums against
// node counts, turns a service spec into the znode payloads the operator publishes, decides
// which RollingDeploy may own a service, and digests observed znodes into a service status.
// It talks to no API server and no ZooKeeper; the controller feeds it what it read.
package plan

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// ValidationError lists every problem found in a spec. Its message is meant for a person.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "invalid spec: " + strings.Join(e.Problems, "; ")
}

// CycleError is a dependency cycle; Cycle starts and ends with the same service.
type CycleError struct {
	Cycle []string
}

func (e *CycleError) Error() string {
	return "dependency cycle: " + strings.Join(e.Cycle, " -> ")
}

// Validate checks what the CRD schema cannot (dependency cycles) and, defensively, what it
// should have (duplicate names, unknown dependencies, znode-safe names, artifacts, quorum format,
// selectors), so a spec that slipped past admission is never published. It returns a
// *ValidationError or nil.
func Validate(spec v1alpha1.RollingDeploySpec) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if len(spec.Services) == 0 {
		add("spec.services is empty: name at least one service")
	}
	switch spec.FailurePolicy {
	case "", v1alpha1.FailurePolicyPause, v1alpha1.FailurePolicyRollback:
	default:
		add("spec.failurePolicy %q is neither %s nor %s", spec.FailurePolicy, v1alpha1.FailurePolicyPause, v1alpha1.FailurePolicyRollback)
	}
	seen := map[string]bool{}
	for i, s := range spec.Services {
		field := fmt.Sprintf("spec.services[%d]", i)
		if s.Name == "" {
			add("%s.name is empty", field)
		} else if err := zklayout.ValidService(s.Name); err != nil {
			add("%s.name: %v", field, err)
		}
		if seen[s.Name] {
			add("service name %q is used more than once", s.Name)
		}
		seen[s.Name] = true
		if err := zklayout.ValidVersion(s.Version); err != nil {
			add("service %q version: %v", s.Name, err)
		}
		if err := artifact(s.Artifact).Validate(); err != nil {
			add("service %q: %v", s.Name, err)
		}
		if len(s.Run.Command) == 0 {
			add("service %q: run.command is empty", s.Name)
		}
		if _, err := quorumValue(s.Quorum.MinAvailable); err != nil {
			add("service %q: %v", s.Name, err)
		}
		if _, err := SelectorString(s.NodeSelector); err != nil {
			add("service %q: %v", s.Name, err)
		}
		problems = append(problems, validateStrategy(fmt.Sprintf("service %q: strategy", s.Name), s.Strategy)...)
	}
	problems = append(problems, validateStrategy("spec.strategy", spec.Strategy)...)
	for _, s := range spec.Services {
		deps := map[string]bool{}
		for _, d := range s.DependsOn {
			switch {
			case d == s.Name:
				add("service %q depends on itself", s.Name)
			case !seen[d]:
				add("service %q depends on %q, which is not a service of this RollingDeploy", s.Name, d)
			case deps[d]:
				add("service %q lists dependency %q twice", s.Name, d)
			}
			deps[d] = true
		}
	}
	if len(problems) == 0 {
		if _, err := TopoOrder(spec.Services); err != nil {
			add("%v: break the cycle by removing one of these dependsOn entries", err)
		}
	}
	if len(problems) > 0 {
		return &ValidationError{Problems: problems}
	}
	return nil
}

// TopoOrder returns the service names in deploy order: every service after the services it
// depends on; among services that are ready at the same time, by name (Kahn's algorithm, so
// the order is deterministic). Unknown dependencies are ignored here (Validate reports them).
// A cycle gives a *CycleError naming one cycle.
func TopoOrder(services []v1alpha1.ServiceSpec) ([]string, error) {
	known := make(map[string]bool, len(services))
	for _, s := range services {
		known[s.Name] = true
	}
	indegree := make(map[string]int, len(services))
	dependents := make(map[string][]string, len(services))
	deps := make(map[string][]string, len(services))
	for _, s := range services {
		if _, ok := indegree[s.Name]; !ok {
			indegree[s.Name] = 0
		}
		uniq := map[string]bool{}
		for _, d := range s.DependsOn {
			if !known[d] || uniq[d] {
				continue
			}
			uniq[d] = true
			indegree[s.Name]++
			dependents[d] = append(dependents[d], s.Name)
			deps[s.Name] = append(deps[s.Name], d)
		}
	}
	var ready []string
	for name, n := range indegree {
		if n == 0 {
			ready = append(ready, name)
		}
	}
	sort.Strings(ready)
	order := make([]string, 0, len(indegree))
	for len(ready) > 0 {
		next := ready[0]
		ready = ready[1:]
		order = append(order, next)
		for _, dep := range dependents[next] {
			indegree[dep]--
			if indegree[dep] == 0 {
				ready = insertSorted(ready, dep)
			}
		}
	}
	if len(order) == len(indegree) {
		return order, nil
	}
	var left []string
	for name, n := range indegree {
		if n > 0 {
			left = append(left, name)
		}
	}
	sort.Strings(left)
	return nil, &CycleError{Cycle: findCycle(left, deps, indegree)}
}

func insertSorted(s []string, v string) []string {
	i := sort.SearchStrings(s, v)
	s = append(s, "")
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

// findCycle walks dependencies from the first service left over by Kahn's algorithm. Every
// leftover service has a leftover dependency, so the walk must revisit a service.
func findCycle(left []string, deps map[string][]string, indegree map[string]int) []string {
	pos := map[string]int{}
	var walk []string
	cur := left[0]
	for {
		if i, ok := pos[cur]; ok {
			cycle := append([]string{}, walk[i:]...)
			// Report the cycle in dependency order: a -> b means b depends on a.
			for l, r := 0, len(cycle)-1; l < r; l, r = l+1, r-1 {
				cycle[l], cycle[r] = cycle[r], cycle[l]
			}
			// Start at the smallest name, so the same cycle always reads the same.
			m := 0
			for k := range cycle {
				if cycle[k] < cycle[m] {
					m = k
				}
			}
			cycle = append(cycle[m:], cycle[:m]...)
			return append(cycle, cycle[0])
		}
		pos[cur] = len(walk)
		walk = append(walk, cur)
		var candidates []string
		for _, d := range deps[cur] {
			if indegree[d] > 0 {
				candidates = append(candidates, d)
			}
		}
		sort.Strings(candidates)
		cur = candidates[0]
	}
}

// quorumValue checks the format of minAvailable: a non-negative integer or "N%" with N in 0..100.
func quorumValue(q intstr.IntOrString) (int, error) {
	if q.Type == intstr.Int {
		if q.IntVal < 0 {
			return 0, fmt.Errorf("quorum.minAvailable %d is negative", q.IntVal)
		}
		return int(q.IntVal), nil
	}
	s := q.StrVal
	if !strings.HasSuffix(s, "%") {
		return 0, fmt.Errorf("quorum.minAvailable %q is neither an integer nor a percentage like \"60%%\"", s)
	}
	var pct int
	if _, err := fmt.Sscanf(strings.TrimSuffix(s, "%"), "%d", &pct); err != nil || fmt.Sprintf("%d%%", pct) != s {
		return 0, fmt.Errorf("quorum.minAvailable %q is not a whole percentage like \"60%%\"", s)
	}
	if pct < 0 || pct > 100 {
		return 0, fmt.Errorf("quorum.minAvailable %q is outside 0%%..100%%", s)
	}
	return pct, nil
}

// QuorumError says a quorum asks for more nodes than the service has.
type QuorumError struct {
	MinAvailable intstr.IntOrString
	Resolved     int
	Nodes        int
}

func (e *QuorumError) Error() string {
	what := e.MinAvailable.String()
	if e.MinAvailable.Type == intstr.String {
		what = fmt.Sprintf("%s (%d nodes)", what, e.Resolved)
	}
	return fmt.Sprintf("quorum.minAvailable %s is larger than the %d node(s) the nodeSelector matches; "+
		"lower minAvailable or label more nodes", what, e.Nodes)
}

// ResolveQuorum turns minAvailable into a node count for a service with nodeCount nodes.
// Percentages round up (60% of 5 is 3, of 4 is 3). A result larger than nodeCount is a
// *QuorumError: no rollout could ever satisfy it.
func ResolveQuorum(q intstr.IntOrString, nodeCount int) (int, error) {
	v, err := quorumValue(q)
	if err != nil {
		return 0, err
	}
	n := v
	if q.Type == intstr.String {
		n = (v*nodeCount + 99) / 100
	}
	if n > nodeCount {
		return n, &QuorumError{MinAvailable: q, Resolved: n, Nodes: nodeCount}
	}
	return n, nil
}

// SelectorString renders a nodeSelector in kubectl's string form ("" selects every node).
func SelectorString(sel *metav1.LabelSelector) (string, error) {
	if sel == nil {
		return "", nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "", fmt.Errorf("nodeSelector: %w", err)
	}
	return s.String(), nil
}

// ServiceByName finds a service of spec.
func ServiceByName(spec v1alpha1.RollingDeploySpec, name string) (v1alpha1.ServiceSpec, bool) {
	for _, s := range spec.Services {
		if s.Name == name {
			return s, true
		}
	}
	return v1alpha1.ServiceSpec{}, false
}
