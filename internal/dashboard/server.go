package dashboard

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/rollkeeper/rollkeeper/internal/rdctl"
)

//go:embed assets
var assets embed.FS

// BatchInterval is the least time between two batches of changes sent to a page: a burst of
// node updates (a wave of upgrades, shards rewritten) costs the browser one render each.
const BatchInterval = 100 * time.Millisecond

// TokenHeader carries the page's token on actions.
const TokenHeader = "X-Rollkeeper-Token"

// Actions carries out the page's buttons: action is pause, resume or abort on RollingDeploy
// name (service empty), or promote of its service's canaries.
type Actions interface {
	Do(ctx context.Context, action, name, service string) (string, error)
}

// ActionsFunc adapts a function to Actions.
type ActionsFunc func(ctx context.Context, action, name, service string) (string, error)

// Do calls f.
func (f ActionsFunc) Do(ctx context.Context, action, name, service string) (string, error) {
	return f(ctx, action, name, service)
}

// Server serves the page, its live updates and its actions.
type Server struct {
	store   *Store
	actions Actions
	token   string
	log     logr.Logger
	index   *template.Template
	// hosts are the Host header values the server answers (set by Listen).
	hosts map[string]bool
	// anyHost: bound to a wildcard address (an explicit opt-in): any Host is answered.
	anyHost bool
	// Batch is the least time between two batches (BatchInterval when zero).
	Batch time.Duration
}

// NewServer returns a Server over store; actions may be nil (a read-only page).
func NewServer(store *Store, actions Actions, log logr.Logger) (*Server, error) {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	idx, err := template.ParseFS(assets, "assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: page template: %w", err)
	}
	return &Server{store: store, actions: actions, token: hex.EncodeToString(tok), log: log, index: idx, hosts: map[string]bool{}}, nil
}

// Token is the per-process token the page sends with actions.
func (s *Server) Token() string { return s.token }

// Listen binds address:port (port 0: any free port) and records the Host values it answers.
// A non-loopback address is an explicit opt-in; Listen logs a warning saying what it opens.
func (s *Server) Listen(address string, port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(address, fmt.Sprint(port)))
	if err != nil {
		return nil, fmt.Errorf("dashboard: listen on %s:%d: %w", address, port, err)
	}
	p := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ip := net.ParseIP(address)
	switch {
	case ip != nil && ip.IsUnspecified():
		s.anyHost = true
	case address == "localhost" || ip != nil && ip.IsLoopback():
	default:
		s.hosts[net.JoinHostPort(address, p)] = true
	}
	if s.anyHost || !(address == "localhost" || ip != nil && ip.IsLoopback()) {
		s.log.Info("WARNING: the dashboard listens on a non-loopback address: whoever reaches it sees your RollingDeploys "+
			"with your credentials, and the page it is served can pause, resume and abort them", "address", ln.Addr().String())
	}
	for _, h := range []string{"127.0.0.1", "localhost", "::1"} {
		s.hosts[net.JoinHostPort(h, p)] = true
	}
	return ln, nil
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	err := srv.Serve(ln)
	<-stopped
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	mux.HandleFunc("GET /{$}", s.page)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServer(http.FS(static))))
	mux.HandleFunc("GET /api/events", s.events)
	mux.HandleFunc("POST /api/rollingdeploys/{name}/{action}", s.act)
	return s.guard(mux)
}

// guard answers only the Host values the server listens on and sets the headers that keep
// the page from being framed or fed foreign scripts.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.anyHost && !s.hosts[r.Host] {
			http.Error(w, "unexpected Host header: the dashboard answers only the address it listens on", http.StatusMisdirectedRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	if err := s.index.Execute(&b, map[string]any{"Token": s.token, "Actions": s.actions != nil}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b.Bytes())
}

// message is one server-sent event's data.
type message struct {
	Seq     uint64   `json:"seq"`
	Full    bool     `json:"full"`
	Meta    Meta     `json:"meta"`
	Changes []Change `json:"changes"`
}

// events streams the Store: a snapshot, then at most one batch of changes per Batch.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	batch := s.Batch
	if batch <= 0 {
		batch = BatchInterval
	}
	ctx := r.Context()
	var seq uint64
	var meta Meta
	first := true
	for {
		changes, now, full, changed := s.store.Since(seq)
		m := s.store.Meta()
		if first || len(changes) > 0 || m != meta {
			msg := message{Seq: now, Full: full, Meta: m, Changes: changes}
			if msg.Changes == nil {
				msg.Changes = []Change{}
			}
			data, err := json.Marshal(msg)
			if err != nil {
				s.log.Error(err, "encode update")
				return
			}
			if _, err := fmt.Fprintf(w, "retry: 2000\ndata: %s\n\n", data); err != nil {
				return // the page went away
			}
			flusher.Flush()
			first, meta = false, m
		}
		seq = now
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		// Let a burst settle into one batch.
		t := time.NewTimer(batch)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// act carries out pause, resume, abort or promote (?service=) for a same-origin page that
// holds the token.
func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	reply := func(code int, key, text string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{key: text})
	}
	if s.actions == nil {
		reply(http.StatusForbidden, "error", "this dashboard is read-only")
		return
	}
	if tok := r.Header.Get(TokenHeader); subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
		reply(http.StatusForbidden, "error", "missing or wrong "+TokenHeader+": reload the page")
		return
	}
	if o := r.Header.Get("Origin"); o != "http://"+r.Host {
		reply(http.StatusForbidden, "error", fmt.Sprintf("cross-origin request refused (Origin %q)", o))
		return
	}
	name, action, service := r.PathValue("name"), r.PathValue("action"), r.URL.Query().Get("service")
	switch action {
	case "pause", "resume", "abort":
		if service != "" {
			reply(http.StatusBadRequest, "error", action+" acts on the whole RollingDeploy: no service")
			return
		}
	case "promote":
		if len(validation.IsDNS1123Label(service)) > 0 { // a service's name, as the CRD has it
			reply(http.StatusBadRequest, "error", "promote needs the service whose canaries to promote (?service=)")
			return
		}
	default:
		reply(http.StatusNotFound, "error", fmt.Sprintf("unknown action %q: pause, resume, abort or promote", action))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	msg, err := s.actions.Do(ctx, action, name, service)
	if err != nil {
		code := http.StatusBadGateway
		switch {
		case errors.Is(err, rdctl.ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, rdctl.ErrAborted):
			code = http.StatusConflict
		case apierrors.IsForbidden(err):
			code = http.StatusForbidden
		}
		s.log.Info("action refused", "action", action, "rollingDeploy", name, "service", service, "err", err.Error())
		reply(code, "error", err.Error())
		return
	}
	s.log.Info("action", "action", action, "rollingDeploy", name, "service", service, "result", msg)
	reply(http.StatusOK, "message", msg)
}
