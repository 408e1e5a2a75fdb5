package plan

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// FuzzResolveQuorum: any minAvailable (a number or a string) resolves to a count in
// 0..nodeCount or an error, never a panic.
func FuzzResolveQuorum(f *testing.F) {
	f.Add(false, int32(3), "", uint32(5))
	f.Add(true, int32(0), "60%", uint32(5))
	f.Add(true, int32(0), "100%", uint32(0))
	f.Add(true, int32(0), "101%", uint32(5))
	f.Add(true, int32(0), "-0%", uint32(5))
	f.Add(true, int32(0), "%", uint32(5))
	f.Add(false, int32(-1), "", uint32(5))
	f.Fuzz(func(t *testing.T, isString bool, i int32, s string, nodeCount uint32) {
		// Node counts come from a Node list, not from untrusted bytes: bounded to a large cluster.
		nodes := int(nodeCount % (1 << 20))
		q := intstr.FromInt32(i)
		if isString {
			q = intstr.FromString(s)
		}
		n, err := ResolveQuorum(q, nodes)
		var qe *QuorumError
		switch {
		case err == nil && (n < 0 || n > nodes):
			t.Fatalf("ResolveQuorum(%s, %d) = %d", q.String(), nodes, n)
		case errors.As(err, &qe) && n <= nodes:
			t.Fatalf("ResolveQuorum(%s, %d) = %d with %v", q.String(), nodes, n, err)
		}
	})
}

// FuzzSelector: the agent parses the plan's selector with labels.Parse. Whatever parses also
// passes zklayout's check, renders to a string that parses to the same selector, and a
// nodeSelector the operator renders (SelectorString) is one the agent parses.
func FuzzSelector(f *testing.F) {
	f.Add("zone in (a,b),!drained,rollkeeper.io/role=web", "zone", "In", "a")
	f.Add("", "k", "Exists", "")
	f.Add("a=b,c!=d,e notin (f),g", "k", "NotIn", "v")
	f.Add("zone in ()", "bad key", "In", "x")
	f.Add("x==y,", "k", "DoesNotExist", "v")
	f.Add("a.b/c-d_e.f=g", "-k", "Near", "v")
	f.Fuzz(func(t *testing.T, s, key, op, value string) {
		if sel, err := labels.Parse(s); err == nil {
			if err := zklayout.ValidSelector(s); err != nil && len(s) <= zklayout.MaxSelectorLength {
				t.Fatalf("labels.Parse takes %q, zklayout refuses it: %v", s, err)
			}
			again, err := labels.Parse(sel.String())
			if err != nil || again.String() != sel.String() {
				t.Fatalf("%q renders as %q, which parses to %v, %v", s, sel.String(), again, err)
			}
		}
		ls := &metav1.LabelSelector{
			MatchLabels:      map[string]string{key: value},
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: metav1.LabelSelectorOperator(op), Values: []string{value}}},
		}
		rendered, err := SelectorString(ls)
		if err != nil {
			return
		}
		if err := zklayout.ValidSelector(rendered); err != nil {
			t.Fatalf("the operator renders %+v as %q, which the agent refuses: %v", ls, rendered, err)
		}
	})
}
