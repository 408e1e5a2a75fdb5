package zkmodel

import (
	"fmt"
	"strings"
	"testing"
)

// fuzzPaths mixes good paths over a small alphabet (so ops collide) with malformed ones.
var fuzzPaths = []string{
	"/", "/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z", "/a/", "/b/",
	"", "a", "//a", "/a/.", "/a/..", "/a\x00", "/\U0001F600", "/zookeeper",
}

// runOps interprets data as an op sequence (4 bytes an op) and returns a trace of every result;
// it fails t on a broken invariant.
func runOps(t *testing.T, data []byte) string {
	m := New()
	var sb strings.Builder
	slots := []SessionID{m.NewSession(), m.NewSession(), m.NewSession()}
	for len(data) >= 4 {
		k, si, pi, arg := data[0], int(data[1])%len(slots), int(data[2])%len(fuzzPaths), data[3]
		data = data[4:]
		s := slots[si]
		if arg&0x80 != 0 {
			s = SessionID(arg & 0x7) // also sessions that expired or never were
		}
		p := fuzzPaths[pi]
		q := fuzzPaths[int(arg)%len(fuzzPaths)]
		version := int32(arg%4) - 1
		payload := []byte(strings.Repeat("d", int(arg%3)))
		var res []any
		switch k % 14 {
		case 0:
			d, st, err := m.Get(s, p)
			res = []any{d, st, err}
		case 1:
			d, st, id, err := m.GetW(s, p)
			res = []any{d, st, id, err}
		case 2:
			ok, st, err := m.Exists(s, p)
			res = []any{ok, st, err}
		case 3:
			ok, st, id, err := m.ExistsW(s, p)
			res = []any{ok, st, id, err}
		case 4:
			c, st, err := m.Children(s, p)
			res = []any{c, st, err}
			if err == nil && int(st.NumChildren) != len(c) {
				t.Fatalf("%s: NumChildren %d, children %v", p, st.NumChildren, c)
			}
		case 5:
			c, st, id, err := m.ChildrenW(s, p)
			res = []any{c, st, id, err}
		case 6:
			out, err := m.Create(s, p, payload, Mode(arg%5))
			res = []any{out, err}
		case 7:
			st, err := m.Set(s, p, payload, version)
			res = []any{st, err}
		case 8:
			res = []any{m.Delete(s, p, version)}
		case 9:
			ops := []Op{CreateOp(p, payload, Mode(arg%4)), SetOp(q, payload, version), DeleteOp(q, -1), CheckOp(p, version), {}}
			n := 1 + int(arg)%4
			res = []any{m.Multi(s, ops[:n]...)}
		case 10, 13:
			if k%14 == 10 {
				m.Expire(s)
			} else {
				m.Close(s)
			}
			for _, n := range m.nodes {
				if s != 0 && n.stat.EphemeralOwner == s {
					t.Fatalf("session %d expired, its ephemeral remains", s)
				}
			}
			if m.Alive(s) {
				t.Fatalf("session %d alive after Expire", s)
			}
			slots[si] = m.NewSession()
		case 11:
			ev, ok := m.Deliver(s)
			res = []any{ev, ok}
		case 12:
			res = []any{m.Pending(s)}
		}
		fmt.Fprintln(&sb, k%14, s, p, res)
		if err := m.Check(); err != nil {
			t.Fatalf("after op %d on %s: %v", k%14, p, err)
		}
	}
	return sb.String()
}

// FuzzModel: no input panics the model, its invariants hold after every op, and it is
// deterministic (the same input, the same trace).
func FuzzModel(f *testing.F) {
	f.Add([]byte{6, 0, 1, 0, 6, 0, 3, 1, 1, 1, 3, 0, 10, 0, 0, 0, 11, 1, 0, 0})
	f.Add([]byte{6, 0, 1, 2, 6, 1, 7, 3, 9, 2, 3, 3, 5, 1, 1, 0, 8, 0, 3, 0, 11, 1, 0, 0})
	f.Add([]byte{3, 2, 2, 0, 6, 1, 2, 1, 6, 1, 5, 4, 10, 1, 0, 0, 11, 2, 0, 0, 9, 0, 1, 0x83})
	f.Fuzz(func(t *testing.T, data []byte) {
		if a, b := runOps(t, data), runOps(t, data); a != b {
			t.Fatal("two runs of the same ops differ")
		}
	})
}
