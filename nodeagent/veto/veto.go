// Package veto asks, just before a node stops for an upgrade, whether anything says "not now":
// the node's own preStopCheck (a database replica catching up, say) and the deploy's alert gate
// (a Prometheus query returning series). The agent's worker asks after rollout.Next chose to
// decide and before the roll call; a "not now" holds the node (it stays first in the queue and
// asks again after the check's period) and its reason goes into the node's staging child,
// where the operator's status and kubectl rollkeeper can-stop show it.
package veto

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/health"
)

// MaxReason bounds a reason kept from a check's output or a body.
const MaxReason = 256

// maxBody bounds what is read of an answer: a preStopCheck's body, a Prometheus response.
const maxBody = 1 << 20

// StopCheck runs the node's preStopCheck: "" means yes, anything else is why not (never ""
// then). host is the node's address (an httpGet without host asks it), env the service's run
// environment (an exec check sees it, never the agent's own).
func StopCheck(ctx context.Context, c *zklayout.StopCheck, host string, env []string) string {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(max(c.TimeoutSeconds, 1))*time.Second)
	defer cancel()
	switch {
	case c.Exec != nil:
		if out, err := health.Run(ctx, c.Exec.Command, env); err != nil {
			return reason(fmt.Sprintf("%s: ", err), out)
		}
		return ""
	case c.HTTPGet != nil:
		u := health.URL(c.HTTPGet, host)
		body, status, err := get(ctx, checkClient, u)
		if err != nil {
			return reason("", []byte(err.Error()))
		}
		if status < 200 || status > 299 {
			return reason(fmt.Sprintf("HTTP %d: ", status), body)
		}
		return ""
	}
	return "preStopCheck has neither exec nor httpGet"
}

// checkClient asks preStopChecks' endpoints on the node, as the health checks do.
var checkClient = health.NewClient()

// Alerts asks the alert gate's Prometheus: "" when its query returns no series, otherwise why
// the node holds (the series, or why Prometheus could not answer: a gate that cannot be asked
// holds).
func Alerts(ctx context.Context, client *http.Client, g *zklayout.AlertGate) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimRight(g.URL, "/") + "/api/v1/query?query=" + url.QueryEscape(g.Query)
	body, status, err := get(ctx, client, u)
	if err != nil {
		return reason("Prometheus cannot be asked: ", []byte(err.Error()))
	}
	if status != http.StatusOK {
		return reason(fmt.Sprintf("Prometheus answered HTTP %d: ", status), body)
	}
	n, first, err := ParseQuery(body)
	if err != nil {
		return reason("Prometheus's answer: ", []byte(err.Error()))
	}
	if n == 0 {
		return ""
	}
	return reason(fmt.Sprintf("%d series for %s, such as ", n, g.Query), []byte(first))
}

func get(ctx context.Context, client *http.Client, u string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", u, err)
	}
	if len(body) > maxBody {
		return nil, 0, fmt.Errorf("answer of %s larger than %d bytes", u, maxBody)
	}
	return body, resp.StatusCode, nil
}

// ErrQuery wraps every refusal of a Prometheus answer.
var ErrQuery = errors.New("not a Prometheus query answer")

// ParseQuery reads a Prometheus /api/v1/query answer (untrusted: bounded by the caller, never
// panics): how many series (or samples) it returned, and the first one's labels, rendered
// {a="b",...} in key order.
func ParseQuery(data []byte) (n int, first string, err error) {
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return 0, "", fmt.Errorf("%w: %v", ErrQuery, err)
	}
	if resp.Status != "success" {
		return 0, "", fmt.Errorf("%w: status %q: %.200s", ErrQuery, resp.Status, resp.Error)
	}
	switch resp.Data.ResultType {
	case "vector", "matrix":
		var series []struct {
			Metric map[string]string `json:"metric"`
		}
		if err := json.Unmarshal(resp.Data.Result, &series); err != nil {
			return 0, "", fmt.Errorf("%w: %v", ErrQuery, err)
		}
		if len(series) == 0 {
			return 0, "", nil
		}
		keys := make([]string, 0, len(series[0].Metric))
		for k := range series[0].Metric {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%q", k, series[0].Metric[k]))
		}
		return len(series), "{" + strings.Join(parts, ",") + "}", nil
	case "scalar", "string":
		// A single sample: it is "a series" only in the sense that the query returned data.
		return 1, "(" + resp.Data.ResultType + ")", nil
	}
	return 0, "", fmt.Errorf("%w: result type %q", ErrQuery, resp.Data.ResultType)
}

// reason is prefix and the first line of out, bounded, printable.
func reason(prefix string, out []byte) string {
	line := ""
	// The first non-empty line, within the first few KiB (a line longer than that is cut).
	sc := bufio.NewScanner(bytes.NewReader(out[:min(len(out), 4*MaxReason)]))
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			line = t
			break
		}
	}
	r := strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, prefix+line)
	r = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(r), ":"))
	if len(r) > MaxReason {
		r = r[:MaxReason]
	}
	if r == "" {
		r = "not now (no reason given)"
	}
	return r
}
