package zkmodel

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
)

// The model alone: fast, no server. conformance_test.go holds the same rules against a real one.

// must is for calls that cannot fail in a correct model (a failure panics with its stack).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func isErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func drain(m *Model, s SessionID) []Event {
	var out []Event
	for {
		ev, ok := m.Deliver(s)
		if !ok {
			return out
		}
		out = append(out, ev)
	}
}

func TestModelCreateGetSetDelete(t *testing.T) {
	m := New()
	s := m.NewSession()
	if got := must(m.Create(s, "/a", []byte("x"), Persistent)); got != "/a" {
		t.Fatalf("created %q", got)
	}
	data, st := must2(t, m.Get, s, "/a")
	if string(data) != "x" || st.Version != 0 || st.DataLength != 1 || st.Czxid != st.Mzxid || st.Czxid != st.Pzxid {
		t.Fatalf("get: %q %+v", data, st)
	}
	st2 := must(m.Set(s, "/a", []byte("yy"), 0))
	if st2.Version != 1 || st2.Mzxid <= st.Mzxid || st2.Czxid != st.Czxid || st2.DataLength != 2 {
		t.Fatalf("set: %+v after %+v", st2, st)
	}
	_, err := m.Set(s, "/a", nil, 0)
	isErr(t, err, zkclient.ErrBadVersion)
	if err.Error() != "zookeeper set /a: "+zkclient.ErrBadVersion.Error() {
		t.Fatalf("error text %q", err)
	}
	isErr(t, m.Delete(s, "/a", 0), zkclient.ErrBadVersion)
	ok(t, m.Delete(s, "/a", 1))
	_, _, err = m.Get(s, "/a")
	isErr(t, err, zkclient.ErrNoNode)
	_, err = m.Create(s, "/missing/b", nil, Persistent)
	isErr(t, err, zkclient.ErrNoNode)
	must(m.Create(s, "/p", nil, Persistent))
	must(m.Create(s, "/p/c", nil, Persistent))
	_, err = m.Create(s, "/p", nil, Persistent)
	isErr(t, err, zkclient.ErrNodeExists)
	isErr(t, m.Delete(s, "/p", -1), zkclient.ErrNotEmpty)
	must(m.Create(s, "/e", nil, Ephemeral))
	_, err = m.Create(s, "/e/c", nil, Persistent)
	isErr(t, err, ErrNoChildrenForEphemerals)
	ok(t, m.Check())
}

func must2(t *testing.T, f func(SessionID, string) ([]byte, Stat, error), s SessionID, p string) ([]byte, Stat) {
	t.Helper()
	d, st, err := f(s, p)
	if err != nil {
		t.Fatal(err)
	}
	return d, st
}

func TestModelSequentialAndCVersion(t *testing.T) {
	m := New()
	s := m.NewSession()
	must(m.Create(s, "/q", nil, Persistent))
	a := must(m.Create(s, "/q/n-", nil, PersistentSequential))
	b := must(m.Create(s, "/q/n-", nil, EphemeralSequential))
	ok(t, m.Delete(s, b, -1))
	c := must(m.Create(s, "/q/", nil, PersistentSequential))
	// The counter counts creates only (the delete of b does not advance it); CVersion counts both.
	if a != "/q/n-0000000000" || b != "/q/n-0000000001" || c != "/q/0000000002" {
		t.Fatalf("names %s %s %s", a, b, c)
	}
	_, st := must2(t, m.Get, s, "/q")
	if st.CVersion != 4 || st.NumChildren != 2 {
		t.Fatalf("stat %+v", st)
	}
	kids := must(childrenOf(m, s, "/q"))
	if !reflect.DeepEqual(kids, []string{"0000000002", "n-0000000000"}) {
		t.Fatalf("children %v", kids)
	}
}

func childrenOf(m *Model, s SessionID, p string) ([]string, error) {
	c, _, err := m.Children(s, p)
	return c, err
}

func TestModelBadPaths(t *testing.T) {
	m := New()
	s := m.NewSession()
	must(m.Create(s, "/a", nil, Persistent))
	for _, p := range []string{"", "a", "/a/", "//a", "/a//b", "/a/.", "/a/..", "/./a", "/../a", "/a\x00b", "/a\x01", "/\xff"} {
		_, _, err := m.Get(s, p)
		isErr(t, err, ErrBadArguments)
		_, err = m.Create(s, p, nil, Persistent)
		isErr(t, err, ErrBadArguments)
		isErr(t, m.Delete(s, p, -1), ErrBadArguments)
	}
	for _, p := range []string{"/a.", "/.a", "/a/..b", "/...", "/é"} {
		_, _, err := m.Get(s, p)
		isErr(t, err, zkclient.ErrNoNode)
	}
	// Refused by the server only: reads say NoNode, writes BadArguments.
	_, _, err := m.Get(s, "/\U0001F600")
	isErr(t, err, zkclient.ErrNoNode)
	_, err = m.Create(s, "/\U0001F600", nil, Persistent)
	isErr(t, err, ErrBadArguments)
	isErr(t, m.Delete(s, "/", -1), ErrBadArguments)
	_, err = m.Create(s, "/", nil, Persistent)
	isErr(t, err, zkclient.ErrNodeExists)
	_, err = m.Create(s, "/a", nil, Mode(9))
	isErr(t, err, ErrBadArguments)
	// In a multi only the server checks.
	isErr(t, m.Multi(s, CreateOp("x", nil, Persistent)), ErrBadArguments)
	isErr(t, m.Multi(s, DeleteOp("/a/", -1)), zkclient.ErrNoNode)
	isErr(t, m.Multi(s, Op{}), ErrBadArguments)
	ok(t, m.Check())
}

func TestModelMultiAtomic(t *testing.T) {
	m := New()
	s := m.NewSession()
	w := m.NewSession()
	must(m.Create(s, "/a", []byte("1"), Persistent))
	_, _, cw, err := m.ChildrenW(w, "/")
	ok(t, err)
	z := m.Zxid()
	err = m.Multi(s, CreateOp("/b", nil, Persistent), SetOp("/a", []byte("2"), 7), CreateOp("/c", nil, Persistent))
	isErr(t, err, zkclient.ErrBadVersion)
	if !strings.HasPrefix(err.Error(), "zookeeper multi /a: ") {
		t.Fatalf("error %q does not name the failing op", err)
	}
	if ex, _, _ := m.Exists(s, "/b"); ex || m.Zxid() != z || m.Pending(w) != 0 {
		t.Fatalf("failed multi left /b=%v zxid %d→%d pending %d", ex, z, m.Zxid(), m.Pending(w))
	}
	ok(t, m.Check())
	ok(t, m.Multi(s, CreateOp("/b", nil, Persistent), CreateOp("/b/s-", nil, PersistentSequential),
		CreateOp("/b/s-", nil, PersistentSequential), DeleteOp("/b/s-0000000000", 0), CheckOp("/a", 0)))
	if m.Zxid() != z+1 {
		t.Fatalf("multi took %d zxids", m.Zxid()-z)
	}
	_, b, _ := m.Get(s, "/b")
	_, s1, _ := m.Get(s, "/b/s-0000000001")
	if b.Czxid != s1.Czxid || b.Pzxid != s1.Czxid || b.CVersion != 3 || b.NumChildren != 1 {
		t.Fatalf("stats %+v %+v", b, s1)
	}
	evs := drain(m, w)
	if !reflect.DeepEqual(evs, []Event{{NodeChildrenChanged, "/", cw}}) {
		t.Fatalf("events %v", evs)
	}
	ok(t, m.Check())
}

func TestModelWatches(t *testing.T) {
	m := New()
	a, b := m.NewSession(), m.NewSession()
	must(m.Create(a, "/n", nil, Persistent))
	_, _, g1, _ := m.GetW(b, "/n")
	_, _, g2, _ := m.GetW(b, "/n")
	_, _, e1, _ := m.ExistsW(b, "/n")
	_, _, c1, _ := m.ChildrenW(b, "/n")
	_, _, x1, _ := m.ExistsW(b, "/x")
	if _, _, id, err := m.GetW(b, "/x"); id != 0 || !errors.Is(err, zkclient.ErrNoNode) {
		t.Fatalf("GetW on a missing node: %d %v", id, err)
	}
	must(m.Set(a, "/n", []byte("v"), -1))
	must(m.Set(a, "/n", []byte("w"), -1)) // one-shot: nothing more
	if m.Pending(b) != 3 {
		t.Fatalf("pending %d", m.Pending(b))
	}
	want := []Event{{NodeDataChanged, "/n", g1}, {NodeDataChanged, "/n", g2}, {NodeDataChanged, "/n", e1}}
	if got := drain(m, b); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	must(m.Create(a, "/x", nil, Persistent))
	must(m.Create(a, "/n/k", nil, Ephemeral))
	want = []Event{{NodeCreated, "/x", x1}, {NodeChildrenChanged, "/n", c1}}
	if got := drain(m, b); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	// Deletion fires data and child watches of the node and the parent's child watch.
	_, _, d1, _ := m.GetW(b, "/n/k")
	_, _, c2, _ := m.ChildrenW(b, "/n")
	_, _, c3, _ := m.ChildrenW(b, "/n/k")
	_, _, s1, _ := m.GetW(a, "/x")
	m.Expire(a)
	want = []Event{{NodeDeleted, "/n/k", d1}, {NodeDeleted, "/n/k", c3}, {NodeChildrenChanged, "/n", c2}}
	if got := drain(m, b); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if got := drain(m, a); !reflect.DeepEqual(got, []Event{{SessionExpired, "/x", s1}}) {
		t.Fatalf("expired session's events %v", got)
	}
	_, _, err := m.Get(a, "/x")
	isErr(t, err, zkclient.ErrSessionExpired)
	if ex, _, _ := m.Exists(b, "/n/k"); ex {
		t.Fatal("ephemeral outlived its session")
	}
	_, _, err = m.Get(SessionID(99), "/")
	isErr(t, err, zkclient.ErrSessionExpired)
	m.Expire(a)
	m.Expire(99)
	ok(t, m.Check())
}

// TestModelDeterministic: the same calls give the same everything, down to watch ids.
func TestModelDeterministic(t *testing.T) {
	run := func() string {
		m := New()
		var sb strings.Builder
		ss := []SessionID{m.NewSession(), m.NewSession(), m.NewSession()}
		for i := 0; i < 200; i++ {
			s := ss[i%3]
			p := fmt.Sprintf("/n%d", i%5)
			switch i % 7 {
			case 0:
				r, err := m.Create(s, p, nil, Mode(i%4))
				fmt.Fprintln(&sb, r, err)
			case 1:
				_, _, id, err := m.GetW(s, p)
				fmt.Fprintln(&sb, id, err)
			case 2:
				_, _, id, err := m.ChildrenW(s, "/")
				fmt.Fprintln(&sb, id, err)
			case 3:
				fmt.Fprintln(&sb, m.Delete(s, p, -1))
			case 4:
				_, _, id, err := m.ExistsW(s, p)
				fmt.Fprintln(&sb, id, err)
			case 5:
				if i%35 == 5 {
					m.Expire(s)
					ss[i%3] = m.NewSession()
				}
			case 6:
				fmt.Fprintln(&sb, drain(m, ss[(i+1)%3]))
			}
		}
		return sb.String()
	}
	if a, b := run(), run(); a != b {
		t.Fatal("two runs differ")
	}
}

// TestModelCloseVersusExpire: on Close the session's own watches on its ephemerals fire (its
// connection is still up when they go); on expiry they end with SessionExpired.
func TestModelCloseVersusExpire(t *testing.T) {
	for _, close := range []bool{true, false} {
		m := New()
		a, b := m.NewSession(), m.NewSession()
		must(m.Create(a, "/e", nil, Ephemeral))
		_, _, own, _ := m.GetW(a, "/e")
		_, _, other, _ := m.ExistsW(b, "/e")
		_, _, kids, _ := m.ChildrenW(b, "/")
		if close {
			m.Close(a)
		} else {
			m.Expire(a)
		}
		wantOwn := []Event{{SessionExpired, "/e", own}}
		if close {
			wantOwn = []Event{{NodeDeleted, "/e", own}}
		}
		if got := drain(m, a); !reflect.DeepEqual(got, wantOwn) {
			t.Fatalf("close=%v: own events %v, want %v", close, got, wantOwn)
		}
		want := []Event{{NodeDeleted, "/e", other}, {NodeChildrenChanged, "/", kids}}
		if got := drain(m, b); !reflect.DeepEqual(got, want) {
			t.Fatalf("close=%v: other's events %v, want %v", close, got, want)
		}
		if m.Alive(a) {
			t.Fatal("alive after its end")
		}
		_, err := m.Create(a, "/f", nil, Persistent)
		isErr(t, err, zkclient.ErrSessionExpired)
		ok(t, m.Check())
	}
}
