package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

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
