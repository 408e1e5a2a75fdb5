package localstack

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Samples is one scrape of a Prometheus endpoint: "name{k=v,...}" (labels sorted by name) to value; a histogram's value
// is its sample count, and "name_sum{...}" its sum.
type Samples map[string]float64

// Get returns the value of name with labels k=v,... (in any order) and whether it is there.
func (s Samples) Get(name string, labels ...string) (float64, bool) {
	sort.Strings(labels)
	v, ok := s[name+"{"+strings.Join(labels, ",")+"}"]
	return v, ok
}

// Has reports whether any series of name carries label kv (k=v).
func (s Samples) Has(name, kv string) bool {
	for k := range s {
		if strings.HasPrefix(k, name+"{") && (strings.Contains(k, "{"+kv+",") || strings.Contains(k, ","+kv+",") ||
			strings.Contains(k, ","+kv+"}") || strings.Contains(k, "{"+kv+"}")) {
			return true
		}
	}
	return false
}

var scrapeClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
	// The operator's metrics certificate is self-signed (controller-runtime generates it).
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test scraper
}}

// metricsURL is addr's /metrics: addr is host:port (http) or a URL with its scheme.
func metricsURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/") + "/metrics"
	}
	return "http://" + addr + "/metrics"
}

// GetMetrics fetches addr's /metrics (addr is host:port for http, or https://host:port),
// presenting token as a bearer token unless it is empty, and returns the status code and at
// most 1 MiB of the body.
func GetMetrics(ctx context.Context, addr, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL(addr), nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// Scrape fetches addr's /metrics and parses the text exposition format (see ScrapeAs).
func Scrape(ctx context.Context, addr string) (Samples, error) { return ScrapeAs(ctx, addr, "") }

// ScrapeAs fetches addr's /metrics (addr is host:port for http, or https://host:port, whose
// certificate is not verified) presenting token as a bearer token unless it is empty, and
// parses the text exposition format.
func ScrapeAs(ctx context.Context, addr, token string) (Samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL(addr), nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET %s/metrics: %s: %s", addr, resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s/metrics: %w", addr, err)
	}
	out := Samples{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum{"+strings.Join(ls, ",")+"}"] = m.GetHistogram().GetSampleSum()
			default:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}

// WaitScrape polls addr's metrics until check returns "" (met) and returns that scrape; on
// timeout the error holds check's last complaint.
func WaitScrape(ctx context.Context, addr string, timeout time.Duration, what string, check func(Samples) string) (Samples, error) {
	return WaitScrapeAs(ctx, addr, "", timeout, what, check)
}

// WaitScrapeAs is WaitScrape presenting token (see ScrapeAs).
func WaitScrapeAs(ctx context.Context, addr, token string, timeout time.Duration, what string, check func(Samples) string) (Samples, error) {
	var last Samples
	err := WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		s, err := ScrapeAs(ctx, addr, token)
		if err != nil {
			return false, err
		}
		last = s
		if msg := check(s); msg != "" {
			return false, fmt.Errorf("%s", msg)
		}
		return true, nil
	})
	return last, err
}
