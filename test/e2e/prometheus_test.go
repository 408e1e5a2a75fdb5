package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/test/harness"
)

// prometheus is Debian's Prometheus (hack/install-deps.sh prometheus), started for a test
// with its own config and storage, scraping targets every second.
type prometheus struct {
	URL  string
	proc *harness.Process
}

func startPrometheus(t *testing.T, ctx context.Context, targets []string) *prometheus {
	t.Helper()
	bin := os.Getenv("ROLLKEEPER_PROMETHEUS")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("prometheus"); err != nil {
			t.Fatalf("prometheus not found: install it (hack/install-deps.sh prometheus, or make deps), or set ROLLKEEPER_PROMETHEUS")
		}
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = fmt.Sprintf("%q", tg)
	}
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n- job_name: rollkeeper-agents\n  static_configs:\n  - targets: [%s]\n",
		strings.Join(quoted, ", "))
	must(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644))
	p := &prometheus{URL: "http://" + addr, proc: &harness.Process{Name: "prometheus", Path: bin, Dir: dir, LogPath: filepath.Join(dir, "prometheus.log"),
		Args: []string{"--config.file=" + filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr}}}
	must(t, p.proc.Start())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.proc.Log())
		}
		_ = p.proc.Stop(5 * time.Second)
	})
	must(t, harness.WaitFor(ctx, time.Minute, "prometheus ready", func(ctx context.Context) (bool, error) {
		resp, err := http.Get(p.URL + "/-/ready")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}))
	return p
}

// series returns how many series query returns now.
func (p *prometheus) series(query string) (int, error) {
	resp, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %s: status %s", query, r.Status)
	}
	return len(r.Data.Result), nil
}
