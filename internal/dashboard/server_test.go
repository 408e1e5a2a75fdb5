package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// serve starts a Server over store on a free loopback port; it stops with the test.
func serve(t testing.TB, store *Store, actions Actions) (*Server, string) {
	t.Helper()
	return serveBatch(t, store, actions, time.Millisecond)
}

// serveBatch is serve with the least time between two batches sent to a page.
func serveBatch(t testing.TB, store *Store, actions Actions, batch time.Duration) (*Server, string) {
	t.Helper()
	srv, err := NewServer(store, actions, testr.NewWithInterface(t, testr.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	srv.Batch = batch // set before serving: the handlers read it
	ln, err := srv.Listen("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return srv, "http://" + ln.Addr().String()
}

func do(t *testing.T, method, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pageToken reads the token the page carries.
func pageToken(t *testing.T, base string) string {
	t.Helper()
	code, body := do(t, "GET", base+"/", nil)
	m := regexp.MustCompile(`name="rk-token" content="([0-9a-f]+)"`).FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("GET /: %d, no token in\n%s", code, body)
	}
	return m[1]
}

func TestServerAnswersOnlyItsOwnHost(t *testing.T) {
	_, base := serve(t, NewStore(), nil)
	port := base[strings.LastIndex(base, ":")+1:]
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		if code, _ := do(t, "GET", base+"/", map[string]string{"Host": host}); code != http.StatusOK {
			t.Errorf("Host %s: %d, want 200", host, code)
		}
	}
	// A page of another site that resolves its name to 127.0.0.1 (DNS rebinding) is refused.
	for _, path := range []string{"/", "/api/events", "/static/app.js"} {
		if code, _ := do(t, "GET", base+path, map[string]string{"Host": "evil.example:" + port}); code != http.StatusMisdirectedRequest {
			t.Errorf("GET %s with a foreign Host: %d, want 421", path, code)
		}
	}
	code, body := do(t, "GET", base+"/static/app.js", nil)
	if code != http.StatusOK || !strings.Contains(body, "EventSource") {
		t.Fatalf("GET /static/app.js: %d", code)
	}
}

func TestServerActionsNeedTokenAndSameOrigin(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	actions := ActionsFunc(func(_ context.Context, action, name, service string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, strings.TrimSpace(action+" "+name+" "+service))
		return "rollingdeploy/" + name + " " + action + "d", nil
	})
	_, base := serve(t, NewStore(), actions)
	tok := pageToken(t, base)
	url := base + "/api/rollingdeploys/web/pause"
	origin := base
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		code int
	}{
		{"no token", map[string]string{"Origin": origin}, http.StatusForbidden},
		{"wrong token", map[string]string{TokenHeader: strings.Repeat("0", 32), "Origin": origin}, http.StatusForbidden},
		{"no Origin", map[string]string{TokenHeader: tok}, http.StatusForbidden},
		{"foreign Origin", map[string]string{TokenHeader: tok, "Origin": "http://evil.example"}, http.StatusForbidden},
		{"same origin with the token", map[string]string{TokenHeader: tok, "Origin": origin}, http.StatusOK},
	} {
		code, body := do(t, "POST", url, tc.hdr)
		if code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
	if code, _ := do(t, "POST", base+"/api/rollingdeploys/web/delete", map[string]string{TokenHeader: tok, "Origin": origin}); code != http.StatusNotFound {
		t.Errorf("unknown action: %d, want 404", code)
	}
	if code, _ := do(t, "GET", url, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET of an action: %d, want 405", code)
	}
	// promote names the service whose canaries go on; the others act on the whole deploy.
	page := map[string]string{TokenHeader: tok, "Origin": origin}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/api/rollingdeploys/web/promote", http.StatusBadRequest},
		{"/api/rollingdeploys/web/promote?service=A%2Fb", http.StatusBadRequest},
		{"/api/rollingdeploys/web/resume?service=a", http.StatusBadRequest},
		{"/api/rollingdeploys/web/promote?service=a", http.StatusOK},
	} {
		if code, body := do(t, "POST", base+tc.path, page); code != tc.code {
			t.Errorf("POST %s: %d %s, want %d", tc.path, code, body, tc.code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(calls) != "[pause web promote web a]" {
		t.Fatalf("actions carried out: %v, want only the one with token and origin", calls)
	}
}

func TestServerReadOnlyRefusesActions(t *testing.T) {
	_, base := serve(t, NewStore(), nil)
	tok := pageToken(t, base)
	code, body := do(t, "POST", base+"/api/rollingdeploys/web/pause", map[string]string{TokenHeader: tok, "Origin": base})
	if code != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Fatalf("read-only dashboard: %d %s", code, body)
	}
}

// stream reads the server-sent events of /api/events.
type stream struct {
	t    *testing.T
	r    *bufio.Reader
	body io.Closer
}

func openStream(t *testing.T, base string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET /api/events: %d %s", resp.StatusCode, ct)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return &stream{t: t, r: bufio.NewReader(resp.Body), body: resp.Body}
}

// next returns the next message (the test's deadline bounds the wait).
func (s *stream) next() message {
	s.t.Helper()
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("read events: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var m message
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				s.t.Fatalf("decode %q: %v", data, err)
			}
			return m
		}
	}
}

// until reads messages, applying them to objs, until done says so.
func (s *stream) until(objs map[string]json.RawMessage, done func(map[string]json.RawMessage, message) bool) message {
	s.t.Helper()
	for {
		m := s.next()
		if m.Full {
			clear(objs)
		}
		for _, c := range m.Changes {
			if c.Data == nil {
				delete(objs, c.Key)
			} else {
				objs[c.Key] = c.Data
			}
		}
		if done(objs, m) {
			return m
		}
	}
}

func TestServerStreamsSnapshotThenChanges(t *testing.T) {
	store := NewStore()
	_ = store.Put("rd/web", map[string]string{"phase": "Progressing"})
	store.SetMeta(func(m *Meta) { m.Synced = true; m.Access = Access{Deploys: true} })
	_, base := serve(t, store, nil)
	s := openStream(t, base)
	first := s.next()
	if !first.Full || !first.Meta.Synced || !first.Meta.Access.Deploys || len(first.Changes) != 1 || first.Changes[0].Key != "rd/web" {
		t.Fatalf("first message %+v: want a snapshot of rd/web with the meta", first)
	}
	objs := map[string]json.RawMessage{}
	for _, c := range first.Changes {
		objs[c.Key] = c.Data
	}
	messages := 0
	for i := range 50 {
		_ = store.Put(fmt.Sprintf("ns/web-a-%d", i), map[string]int{"shard": i})
	}
	store.Delete("rd/web")
	s.until(objs, func(o map[string]json.RawMessage, m message) bool {
		messages++
		if m.Full {
			t.Fatalf("a batch came as a snapshot: %+v", m)
		}
		_, gone := o["rd/web"]
		return len(o) == 50 && !gone
	})
	// 51 changes, fewer messages: a burst is batched (how many depends on the machine's pace).
	if messages > 51 {
		t.Fatalf("%d messages for 51 changes", messages)
	}
	t.Logf("51 changes in %d message(s)", messages)
}
