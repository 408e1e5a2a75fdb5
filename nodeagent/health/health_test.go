package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func check() *zklayout.HealthCheck {
	return &zklayout.HealthCheck{TimeoutSeconds: 1, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 2}
}

func TestHTTPGet(t *testing.T) {
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	hc := check()
	hc.HTTPGet = &zklayout.HTTPGet{Path: "/healthz", Port: p, Scheme: "HTTP"}
	if err := Wait(context.Background(), hc, host, nil, nil); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("unhealthy server: %v", err)
	}
	healthy.Store(true)
	if err := Wait(context.Background(), hc, host, nil, nil); err != nil {
		t.Fatalf("healthy server: %v", err)
	}
}

func TestTCPAndExec(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	hc := check()
	hc.TCPSocket = &zklayout.TCPSocket{Port: port}
	if err := Wait(context.Background(), hc, "127.0.0.1", nil, nil); err != nil {
		t.Fatalf("open port: %v", err)
	}
	l.Close()
	if err := Wait(context.Background(), hc, "127.0.0.1", nil, nil); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("closed port: %v", err)
	}
	hc = check()
	hc.Exec = &zklayout.Exec{Command: []string{"/bin/sh", "-c", `test "$WANT" = yes`}}
	if err := Wait(context.Background(), hc, "", []string{"WANT=yes"}, nil); err != nil {
		t.Fatalf("exec pass: %v", err)
	}
	hc.FailureThreshold = 1
	if err := Wait(context.Background(), hc, "", []string{"WANT=no"}, nil); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("exec fail: %v", err)
	}
}

func TestDeadProcessFailsFast(t *testing.T) {
	hc := check()
	hc.FailureThreshold = 1
	hc.Exec = &zklayout.Exec{Command: []string{"true"}}
	dead := func() error { return errors.New("process exited") }
	if err := Wait(context.Background(), hc, "", nil, dead); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("dead process: %v", err)
	}
	if err := Wait(context.Background(), nil, "", nil, dead); err == nil {
		t.Fatal("no check and a dead process passed")
	}
}

// An exec check with an empty command once sliced argv[0] out of range and panicked the agent.
func TestExecWithoutCommandFailsWithoutPanic(t *testing.T) {
	for _, argv := range [][]string{nil, {}, {""}, {"", "x"}} {
		hc := check()
		hc.Exec = &zklayout.Exec{Command: argv}
		if err := NewProber(hc, "127.0.0.1", nil)(context.Background()); err == nil {
			t.Errorf("exec %q: probe passed", argv)
		}
		if err := Wait(context.Background(), hc, "127.0.0.1", nil, nil); !errors.Is(err, ErrUnhealthy) {
			t.Errorf("exec %q: Wait = %v, want ErrUnhealthy", argv, err)
		}
	}
}

// An exec check runs with PATH and the run's variables, not the agent's environment (where
// the agent keeps its ZooKeeper credentials), even when it is given no variables at all.
func TestExecCheckSeesNoAgentSecrets(t *testing.T) {
	t.Setenv("ROLLKEEPER_ZK_AUTH", "agent:zk-secret")
	t.Setenv("PATH", "/usr/bin:/bin:/rollkeeper-agent-path")
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"no variables", nil, []string{"PATH=/usr/bin:/bin:/rollkeeper-agent-path"}},
		{"run variables", []string{"ROLLKEEPER_VERSION=v1"}, []string{"PATH=/usr/bin:/bin:/rollkeeper-agent-path", "ROLLKEEPER_VERSION=v1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "env")
			hc := check()
			// cp copies its own environment; a shell would add variables of its own (PWD...).
			hc.Exec = &zklayout.Exec{Command: []string{"/bin/cp", "/proc/self/environ", out}}
			if err := Wait(context.Background(), hc, "", tc.env, nil); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"); !slices.Equal(got, tc.want) {
				t.Fatalf("check's environment = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHold(t *testing.T) {
	ctx := context.Background()
	// Alive throughout: passes when the time is up.
	if err := Hold(ctx, nil, "", nil, func() error { return nil }, 50*time.Millisecond, "during the minimum healthy time"); err != nil {
		t.Fatalf("alive throughout: %v", err)
	}
	// The process exits: fails at the next look, whatever is left of the time.
	exited := errors.New("exit status 1")
	err := Hold(ctx, nil, "", nil, func() error { return exited }, time.Hour, "during the minimum healthy time")
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "minimum healthy time") || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("exited: %v", err)
	}
	// A probe failing failureThreshold times in a row fails it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", 500) })}
	go srv.Serve(ln)
	defer srv.Close()
	hc := &zklayout.HealthCheck{HTTPGet: &zklayout.HTTPGet{Path: "/", Port: ln.Addr().(*net.TCPAddr).Port, Scheme: "HTTP"},
		TimeoutSeconds: 1, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 2}
	err = Hold(ctx, hc, "127.0.0.1", nil, nil, time.Hour, "during the minimum healthy time")
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "after 2 probes") {
		t.Fatalf("failing probe: %v", err)
	}
}
