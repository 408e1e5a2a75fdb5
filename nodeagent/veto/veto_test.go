package veto

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func TestStopCheckExec(t *testing.T) {
	ctx := context.Background()
	yes := &zklayout.StopCheck{Exec: &zklayout.Exec{Command: []string{"true"}}, TimeoutSeconds: 5, PeriodSeconds: 1}
	if r := StopCheck(ctx, yes, "127.0.0.1", nil); r != "" {
		t.Fatalf("exit 0: %q", r)
	}
	no := &zklayout.StopCheck{Exec: &zklayout.Exec{Command: []string{"sh", "-c", "echo; echo 'replica 12s behind'; echo more; exit 3"}}, TimeoutSeconds: 5, PeriodSeconds: 1}
	if r := StopCheck(ctx, no, "127.0.0.1", nil); r != "exit status 3: replica 12s behind" {
		t.Fatalf("exit 3: %q", r)
	}
	// The check sees the service's environment, never the agent's.
	t.Setenv("AGENT_SECRET", "s3cret")
	env := &zklayout.StopCheck{Exec: &zklayout.Exec{Command: []string{"sh", "-c", `echo "[$AGENT_SECRET][$MODE]"; exit 1`}}, TimeoutSeconds: 5, PeriodSeconds: 1}
	if r := StopCheck(ctx, env, "127.0.0.1", []string{"MODE=prod"}); r != "exit status 1: [][prod]" {
		t.Fatalf("environment: %q", r)
	}
	// A flood of output is bounded.
	flood := &zklayout.StopCheck{Exec: &zklayout.Exec{Command: []string{"sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x; exit 1"}}, TimeoutSeconds: 5, PeriodSeconds: 1}
	if r := StopCheck(ctx, flood, "127.0.0.1", nil); len(r) > MaxReason || !strings.HasPrefix(r, "exit status 1: xxx") {
		t.Fatalf("flood: %d bytes: %.40q", len(r), r)
	}
}

func TestStopCheckHTTP(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		w.Write([]byte("catching up: 3 s behind\nsecond line\n"))
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	p, _ := strconv.Atoi(port)
	c := &zklayout.StopCheck{HTTPGet: &zklayout.HTTPGet{Path: "/ready-to-stop", Port: p, Scheme: "HTTP"}, TimeoutSeconds: 5, PeriodSeconds: 1}
	if r := StopCheck(context.Background(), c, host, nil); r != "" {
		t.Fatalf("200: %q", r)
	}
	status = http.StatusServiceUnavailable
	if r := StopCheck(context.Background(), c, host, nil); r != "HTTP 503: catching up: 3 s behind" {
		t.Fatalf("503: %q", r)
	}
	srv.Close()
	if r := StopCheck(context.Background(), c, host, nil); !strings.Contains(r, "connect") {
		t.Fatalf("closed: %q", r)
	}
}

func TestAlerts(t *testing.T) {
	body := `{"status":"success","data":{"resultType":"vector","result":[]}}`
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Path + "?" + r.URL.RawQuery
		w.Write([]byte(body))
	}))
	defer srv.Close()
	g := &zklayout.AlertGate{URL: srv.URL + "/", Query: `ALERTS{alertstate="firing"}`, PeriodSeconds: 1}
	if r := Alerts(context.Background(), srv.Client(), g); r != "" {
		t.Fatalf("no series: %q", r)
	}
	if asked != "/api/v1/query?query=ALERTS%7Balertstate%3D%22firing%22%7D" {
		t.Fatalf("asked %q", asked)
	}
	body = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"alertname":"DiskFull","instance":"n1"},"value":[1,"1"]},{"metric":{},"value":[1,"1"]}]}}`
	if r := Alerts(context.Background(), srv.Client(), g); r != `2 series for ALERTS{alertstate="firing"}, such as {alertname="DiskFull",instance="n1"}` {
		t.Fatalf("firing: %q", r)
	}
	body = `{"status":"error","errorType":"bad_data","error":"parse error"}`
	if r := Alerts(context.Background(), srv.Client(), g); !strings.Contains(r, "parse error") {
		t.Fatalf("error answer: %q", r)
	}
	srv.Close()
	if r := Alerts(context.Background(), srv.Client(), g); !strings.HasPrefix(r, "Prometheus cannot be asked") {
		t.Fatalf("unreachable: %q", r)
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1,"1"]}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[]}}`,
		`{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}`,
		`{"status":"error","error":"x"}`,
		`{"status":"success","data":{"resultType":"vector","result":{}}}`,
		`null`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, first, err := ParseQuery(data)
		if err != nil && (n != 0 || first != "") {
			t.Fatalf("error with a result: %d %q %v", n, first, err)
		}
		if n < 0 {
			t.Fatalf("negative count %d", n)
		}
		_ = reason("x: ", data)
	})
}
