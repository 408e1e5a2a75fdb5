// Package health decides whether a freshly started version is healthy, with the probe kinds
// and thresholds of a RollingDeploy's healthCheck (HTTP GET, TCP, exec).
package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/hostenv"
)

// ErrUnhealthy wraps the last probe failure once FailureThreshold probes in a row failed.
var ErrUnhealthy = errors.New("health check failed")

// Prober runs one probe.
type Prober func(ctx context.Context) error

// Wait probes every period until SuccessThreshold probes pass in a row (nil) or
// FailureThreshold fail in a row (ErrUnhealthy). alive, if set, is consulted before each probe
// so a crashed process fails fast. A nil check passes once the process is alive. env is the
// run's environment for exec checks (see NewProber).
func Wait(ctx context.Context, hc *zklayout.HealthCheck, defaultHost string, env []string, alive func() error) error {
	if hc == nil {
		if alive != nil {
			return alive()
		}
		return nil
	}
	probe := NewProber(hc, defaultHost, env)
	period := time.Duration(hc.PeriodSeconds) * time.Second
	// The first probe comes soon after start: most services bind within milliseconds, and a
	// failure only costs one period.
	timer := time.NewTimer(100 * time.Millisecond)
	defer timer.Stop()
	passes, fails := 0, 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		var err error
		if alive != nil {
			err = alive()
		}
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, time.Duration(hc.TimeoutSeconds)*time.Second)
			err = probe(pctx)
			cancel()
		}
		if err == nil {
			passes, fails = passes+1, 0
			if passes >= hc.SuccessThreshold {
				return nil
			}
		} else {
			passes, fails = 0, fails+1
			if fails >= hc.FailureThreshold {
				return fmt.Errorf("%w after %d probes: %v", ErrUnhealthy, fails, err)
			}
		}
		timer.Reset(period)
	}
}

// Hold keeps probing a version that passed its health check for d (a rollout's minimum healthy
// time, a canary's bake; during names it in the error): it fails as soon as the process exits
// (alive) or FailureThreshold probes in a row fail, and passes once d is over. A nil check
// watches only that the process lives, every second.
func Hold(ctx context.Context, hc *zklayout.HealthCheck, defaultHost string, env []string, alive func() error, d time.Duration, during string) error {
	period := time.Second
	var probe Prober
	threshold := 1
	if hc != nil {
		probe = NewProber(hc, defaultHost, env)
		period = time.Duration(hc.PeriodSeconds) * time.Second
		threshold = hc.FailureThreshold
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(period)
	defer tick.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
		var err error
		if alive != nil {
			if err = alive(); err != nil {
				return fmt.Errorf("%w %s: %v", ErrUnhealthy, during, err)
			}
		}
		if probe != nil {
			pctx, cancel := context.WithTimeout(ctx, time.Duration(hc.TimeoutSeconds)*time.Second)
			err = probe(pctx)
			cancel()
		}
		if err == nil {
			fails = 0
			continue
		}
		if fails++; fails >= threshold {
			return fmt.Errorf("%w %s, after %d probes: %v", ErrUnhealthy, during, fails, err)
		}
	}
}

// NewProber builds the probe the check describes. An exec check runs with PATH and env only
// (hostenv.Build), never with the agent's environment, which holds its secrets.
func NewProber(hc *zklayout.HealthCheck, defaultHost string, env []string) Prober {
	host := func(h string) string {
		if h == "" {
			return defaultHost
		}
		return h
	}
	switch {
	case hc.HTTPGet != nil:
		url, client := URL(hc.HTTPGet, defaultHost), NewClient()
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("GET %s: %w", url, err)
			}
			resp.Body.Close()
			if resp.StatusCode < 200 || resp.StatusCode >= 400 {
				return fmt.Errorf("GET %s: %s", url, resp.Status)
			}
			return nil
		}
	case hc.TCPSocket != nil:
		addr := net.JoinHostPort(host(hc.TCPSocket.Host), strconv.Itoa(hc.TCPSocket.Port))
		return func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return fmt.Errorf("tcp %s: %w", addr, err)
			}
			return c.Close()
		}
	case hc.Exec != nil:
		argv := hc.Exec.Command
		if len(argv) == 0 || argv[0] == "" {
			// zklayout refuses such a release; a check built by hand still fails, never panics.
			return func(context.Context) error { return fmt.Errorf("exec %q: the command is empty", argv) }
		}
		return func(ctx context.Context) error {
			if out, err := Run(ctx, argv, env); err != nil {
				return fmt.Errorf("exec %v: %w: %.200s", argv, err, out)
			}
			return nil
		}
	}
	return func(context.Context) error { return errors.New("health check has no probe") }
}

// URL is what an httpGet check (a health check's, a preStopCheck's) asks: its host, else
// defaultHost (the node's address).
func URL(g *zklayout.HTTPGet, defaultHost string) string {
	h, scheme := g.Host, "http"
	if h == "" {
		h = defaultHost
	}
	if g.Scheme == "HTTPS" {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(h, strconv.Itoa(g.Port)), g.Path)
}

// NewClient is the HTTP client of httpGet checks. Like kubelet's probes, HTTPS endpoints on
// the node are not verified; no connection is kept between probes.
func NewClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		DisableKeepAlives: true,
	}}
}

// MaxOutput bounds what is kept of an exec check's output: a check cannot fill the agent's
// memory.
const MaxOutput = 1 << 20

// Run runs an exec check's command in env (the service's run environment, hostenv adds PATH;
// never the agent's own) and returns at most MaxOutput of its combined output.
func Run(ctx context.Context, argv []string, env []string) ([]byte, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("exec %q: the command is empty", argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = hostenv.Build(env...)
	var out bytes.Buffer
	// One writer for both: exec then writes from one goroutine at a time.
	lw := &limited{w: &out, n: MaxOutput}
	cmd.Stdout, cmd.Stderr = lw, lw
	err := cmd.Run()
	return out.Bytes(), err
}

// limited writes at most n bytes to w and drops the rest.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
