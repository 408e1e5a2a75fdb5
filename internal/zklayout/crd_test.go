package zklayout

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// crdRule is a string field's rule as the CRD states it: what the API server admits.
type crdRule struct {
	pattern   *regexp.Regexp
	maxLength int
}

// accepts applies the rule as the API server does (maxLength counts characters).
func (r crdRule) accepts(s string) bool {
	return utf8.RuneCountInString(s) <= r.maxLength && r.pattern.MatchString(s)
}

// nodeRule is a Kubernetes Node name's rule (a DNS-1123 subdomain, apimachinery's regexp
// written out) with the RollingDeployNodeSet CRD's bound on node names. Node names are no
// RollingDeploy field, so the API server's rule for Node objects is the one to match.
var nodeRule = crdRule{
	pattern:   regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`),
	maxLength: 253,
}

var (
	crdOnce  sync.Once
	crdRules map[string]crdRule // "name", "version" (services[]), "node" (nodesets' nodes[].name)
	crdErr   error
)

// loadCRDRules reads the service name and version rules from the generated CRD, and the node
// name bound from the RollingDeployNodeSet CRD, so the comparison follows the manifests.
func loadCRDRules(t testing.TB) map[string]crdRule {
	t.Helper()
	crdOnce.Do(func() {
		crdRules = map[string]crdRule{}
		dir := filepath.Join("..", "..", "config", "crd", "bases")
		svc, err := crdItemProps(filepath.Join(dir, "rollkeeper.io_rollingdeploys.yaml"), "spec", "services")
		if err != nil {
			crdErr = err
			return
		}
		for _, f := range []string{"name", "version"} {
			r, err := ruleOf(svc, f)
			if err != nil {
				crdErr = err
				return
			}
			crdRules[f] = r
		}
		nodes, err := crdItemProps(filepath.Join(dir, "rollkeeper.io_rollingdeploynodesets.yaml"), "nodes")
		if err != nil {
			crdErr = err
			return
		}
		n, _ := nodes["name"].(map[string]any)
		ml, ok := n["maxLength"].(float64)
		if !ok {
			crdErr = fmt.Errorf("nodesets: nodes[].name has no maxLength")
			return
		}
		crdRules["node"] = crdRule{pattern: nodeRule.pattern, maxLength: int(ml)}
	})
	if crdErr != nil {
		t.Fatal(crdErr)
	}
	return crdRules
}

// crdItemProps returns the properties of the items of the list at fields (below the schema's
// root) in a CRD file.
func crdItemProps(file string, fields ...string) (map[string]any, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	node := any(doc)
	keys := []string{"spec", "versions", "0", "schema", "openAPIV3Schema"}
	for _, f := range fields {
		keys = append(keys, "properties", f)
	}
	for _, k := range append(keys, "items", "properties") {
		switch v := node.(type) {
		case map[string]any:
			node = v[k]
		case []any:
			if len(v) == 0 {
				return nil, fmt.Errorf("%s: empty list at %s", file, k)
			}
			node = v[0]
		}
	}
	props, ok := node.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: no %s[] properties", file, strings.Join(fields, "."))
	}
	return props, nil
}

func ruleOf(props map[string]any, field string) (crdRule, error) {
	f, _ := props[field].(map[string]any)
	p, ok1 := f["pattern"].(string)
	ml, ok2 := f["maxLength"].(float64)
	if !ok1 || !ok2 {
		return crdRule{}, fmt.Errorf("services[].%s has no pattern or maxLength", field)
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return crdRule{}, err
	}
	return crdRule{pattern: re, maxLength: int(ml)}, nil
}

// nameInputs are the table both sides judge: traversal attempts, separators, NUL, case, the
// length bounds of each kind, and non-ASCII.
var nameInputs = []string{
	"", "a", "A", "0", "v1", "v1.2.3", "v1.2.3+build_7", "1.0-rc.1", "a-b", "a.b", "a_b", "a+b", "a:b",
	"-a", "a-", ".a", "a.", "_a", "+a", ".", "..", "...", "./x", "../x", "../../../x", "x/..", "a/b", "/a", "a\\b",
	"a\x00b", "\x00", "a b", " a", "a\n", "é", "vé", "ＡＢ", "node-01", "node-01.example.com", "Node-01", "a..b",
	strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("v", 128), strings.Repeat("v", 129),
	strings.Repeat("a", 253), strings.Repeat("a", 254), strings.Repeat("a.", 126) + "a", strings.Repeat("é", 64),
}

// pathElement reports whether s is exactly one path element, both as a znode path (path.Join)
// and as a file path (filepath.Join) element: joining it never leaves its parent.
func pathElement(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00") &&
		path.Join("/r", s) == "/r/"+s && filepath.Join("/r", s) == filepath.FromSlash("/r/"+s)
}

// checkName compares the Go validators with the manifests' rules on s, and checks that every
// name they accept is one path element.
func checkName(t *testing.T, rules map[string]crdRule, s string) {
	t.Helper()
	for _, k := range []struct {
		kind  string
		rule  crdRule
		valid func(string) error
	}{
		{"service", rules["name"], ValidService},
		{"version", rules["version"], ValidVersion},
		{"node", rules["node"], ValidNode},
	} {
		err := k.valid(s)
		if want := k.rule.accepts(s); (err == nil) != want {
			t.Errorf("%s %q: Go rule says %v, CRD rule (%s, at most %d) accepts: %v", k.kind, clip(s), err, k.rule.pattern, k.rule.maxLength, want)
		}
		if err == nil && !pathElement(s) {
			t.Errorf("%s %q is valid but not a single path element", k.kind, s)
		}
	}
}

// The CRD (config/crd/bases, generated from api/v1alpha1's markers) and the Go validators agree
// on every input of the table: a name the API server admits is one an agent accepts, and the
// reverse.
func TestNameRulesMatchCRD(t *testing.T) {
	rules := loadCRDRules(t)
	if rules["name"].maxLength != MaxServiceNameLength || rules["version"].maxLength != MaxVersionLength {
		t.Fatalf("CRD bounds (name %d, version %d) differ from MaxServiceNameLength %d, MaxVersionLength %d",
			rules["name"].maxLength, rules["version"].maxLength, MaxServiceNameLength, MaxVersionLength)
	}
	if versionRE.String() != rules["version"].pattern.String() {
		t.Errorf("versionRE %s is not the CRD's pattern %s", versionRE, rules["version"].pattern)
	}
	for _, s := range nameInputs {
		checkName(t, rules, s)
	}
	for _, s := range []string{"..", "../../../x", "a/b", ".", "", "a\x00b", strings.Repeat("v", 254)} {
		if ValidService(s) == nil || ValidVersion(s) == nil || ValidNode(s) == nil {
			t.Errorf("%q is accepted by one of the validators", clip(s))
		}
	}
}

// FuzzNames: for any string, each Go validator accepts exactly what the manifests' rule admits,
// and what it accepts is one path element.
func FuzzNames(f *testing.F) {
	for _, s := range nameInputs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkName(t, loadCRDRules(t), s)
	})
}
