package zklayout

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	// Agents may run where the host has no zoneinfo (a distroless image): windows name IANA
	// time zones, so every binary that validates a plan carries the database.
	_ "time/tzdata"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Bounds of a plan's rollout gates (the CRD's markers say the same; test/constraints checks).
const (
	MaxWindows        = 16
	MaxDomains        = 1024
	MaxTimeZoneLength = 64
	// MaxMinHealthySeconds bounds minHealthyTime: a day.
	MaxMinHealthySeconds = 86400
	// MaxBakeSeconds bounds a canary's bakeTime: a week.
	MaxBakeSeconds = 7 * 86400
)

// Weekdays, as windows name them (time.Weekday's order).
var Weekdays = [...]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

var (
	clockRE    = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)
	timeZoneRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+/-]*$`)
)

// Topology spreads a service's upgrades over failure domains: the nodes' values of the label
// Key. At most MaxUnavailablePerDomain nodes of one domain upgrade at once, never nodes of two
// domains at once, and domains go in the order of their names.
type Topology struct {
	Key                     string `json:"key"`
	MaxUnavailablePerDomain int    `json:"maxUnavailablePerDomain"`
	// Domains are the per-domain quorums the operator resolved (sorted by name; a domain not
	// listed has none).
	Domains []DomainQuorum `json:"domains,omitempty"`
}

// DomainQuorum is how many of a domain's nodes must stay online.
type DomainQuorum struct {
	Name         string `json:"name"`
	MinAvailable int    `json:"minAvailable"`
}

// MinAvailableIn is domain's quorum (0: none).
func (t *Topology) MinAvailableIn(domain string) int {
	if t == nil {
		return 0
	}
	for _, d := range t.Domains {
		if d.Name == domain {
			return d.MinAvailable
		}
	}
	return 0
}

func (t *Topology) validate() error {
	if t == nil { // optional
		return nil
	}
	if errs := validation.IsQualifiedName(t.Key); len(errs) > 0 {
		return fmt.Errorf("topology.key %q: %s", clip(t.Key), strings.Join(errs, "; "))
	}
	if t.MaxUnavailablePerDomain < 1 {
		return fmt.Errorf("topology.maxUnavailablePerDomain %d is less than 1", t.MaxUnavailablePerDomain)
	}
	if len(t.Domains) > MaxDomains {
		return fmt.Errorf("topology: %d domains, at most %d", len(t.Domains), MaxDomains)
	}
	for _, d := range t.Domains {
		if errs := validation.IsValidLabelValue(d.Name); len(errs) > 0 {
			return fmt.Errorf("topology domain %q: %s", clip(d.Name), strings.Join(errs, "; "))
		}
		if d.MinAvailable < 0 {
			return fmt.Errorf("topology domain %s: minAvailable %d is negative", d.Name, d.MinAvailable)
		}
	}
	return nil
}

// Window is a maintenance window: on Days (empty: every day), from Start to End ("HH:MM",
// 24-hour clock) in TimeZone (an IANA name). An End at or before Start ends the next day.
type Window struct {
	Days     []string `json:"days,omitempty"`
	Start    string   `json:"start"`
	End      string   `json:"end"`
	TimeZone string   `json:"timeZone"`
}

// Validate checks a window as the CRD does, and that its time zone exists.
func (w Window) Validate() error {
	if len(w.Days) > len(Weekdays) {
		return fmt.Errorf("window: %d days, at most 7", len(w.Days))
	}
	for _, d := range w.Days {
		if weekday(d) < 0 {
			return fmt.Errorf("window day %q is none of %s", clip(d), strings.Join(Weekdays[:], ", "))
		}
	}
	if !clockRE.MatchString(w.Start) {
		return fmt.Errorf("window start %q is not HH:MM", clip(w.Start))
	}
	if !clockRE.MatchString(w.End) {
		return fmt.Errorf("window end %q is not HH:MM", clip(w.End))
	}
	if _, err := w.Location(); err != nil {
		return err
	}
	return nil
}

// Location is the window's time zone.
func (w Window) Location() (*time.Location, error) {
	if len(w.TimeZone) > MaxTimeZoneLength || !timeZoneRE.MatchString(w.TimeZone) {
		return nil, fmt.Errorf("window time zone %q is not an IANA time zone name", clip(w.TimeZone))
	}
	loc, err := time.LoadLocation(w.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("window time zone %q: %w", clip(w.TimeZone), err)
	}
	return loc, nil
}

func weekday(d string) int {
	for i, n := range Weekdays {
		if n == d {
			return i
		}
	}
	return -1
}

// clock parses "HH:MM" (checked by Validate) into minutes.
func clock(s string) int {
	var h, m int
	fmt.Sscanf(s, "%d:%d", &h, &m)
	return h*60 + m
}

// Opens returns, for a valid window, whether it is open at now, and when it next opens after
// now (zero if never: no day listed can come, which Validate rules out).
func (w Window) Opens(now time.Time) (open bool, next time.Time) {
	loc, err := w.Location()
	if err != nil {
		return false, time.Time{}
	}
	local := now.In(loc)
	start, end := clock(w.Start), clock(w.End)
	length := time.Duration(end-start) * time.Minute
	if end <= start {
		length += 24 * time.Hour
	}
	days := map[int]bool{}
	for _, d := range w.Days {
		days[weekday(d)] = true
	}
	y, m, d := local.Date()
	for off := -1; off <= 8; off++ {
		day := time.Date(y, m, d+off, 0, 0, 0, 0, loc)
		if len(days) > 0 && !days[int(day.Weekday())] {
			continue
		}
		begin := time.Date(day.Year(), day.Month(), day.Day(), start/60, start%60, 0, 0, loc)
		if !begin.After(now) && now.Before(begin.Add(length)) {
			open = true
		}
		if begin.After(now) && next.IsZero() {
			next = begin
		}
	}
	return open, next
}

// InWindows says whether any window is open at now (no windows: always), and otherwise when the
// first opens next and which window that is.
func InWindows(ws []Window, now time.Time) (open bool, next time.Time, which *Window) {
	if len(ws) == 0 {
		return true, time.Time{}, nil
	}
	for i := range ws {
		o, n := ws[i].Opens(now)
		if o {
			return true, time.Time{}, &ws[i]
		}
		if !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next, which = n, &ws[i]
		}
	}
	return false, next, which
}

// WindowWait says, in a user's words, when the next window opens.
func WindowWait(next time.Time, w *Window, now time.Time) string {
	if w == nil || next.IsZero() {
		return "no maintenance window will open"
	}
	loc, err := w.Location()
	if err != nil {
		return "no maintenance window will open"
	}
	at := next.In(loc)
	if next.Sub(now) < 24*time.Hour {
		return fmt.Sprintf("window opens at %s %s", at.Format("15:04"), w.TimeZone)
	}
	return fmt.Sprintf("window opens at %s %s %s", at.Format("Mon"), at.Format("15:04"), w.TimeZone)
}

// StopCheck asks the node itself, just before it stops for an upgrade, whether now is a good
// time: an exec command exiting 0, or an HTTP GET answering 2xx, says yes; anything else says
// "not now", with the command's output or the answer's body (its first line) as the reason.
type StopCheck struct {
	HTTPGet        *HTTPGet `json:"httpGet,omitempty"`
	Exec           *Exec    `json:"exec,omitempty"`
	TimeoutSeconds int      `json:"timeoutSeconds"`
	// PeriodSeconds is how long a node told "not now" waits before asking again.
	PeriodSeconds int `json:"periodSeconds"`
}

func (c *StopCheck) validate() error {
	if c == nil { // optional
		return nil
	}
	if (c.HTTPGet != nil) == (c.Exec != nil) {
		return fmt.Errorf("preStopCheck: exactly one of httpGet and exec")
	}
	if err := firstErr(inRange("preStopCheck.timeoutSeconds", c.TimeoutSeconds, 1, MaxProbeSeconds),
		inRange("preStopCheck.periodSeconds", c.PeriodSeconds, 1, MaxProbeSeconds)); err != nil {
		return err
	}
	if g := c.HTTPGet; g != nil {
		if g.Scheme != "HTTP" && g.Scheme != "HTTPS" {
			return fmt.Errorf("preStopCheck.httpGet.scheme %q is neither HTTP nor HTTPS", clip(g.Scheme))
		}
		if !strings.HasPrefix(g.Path, "/") {
			return fmt.Errorf("preStopCheck.httpGet.path %q does not start with /", clip(g.Path))
		}
		return firstErr(maxLen("preStopCheck.httpGet.path", g.Path, MaxPathLength),
			validHost("preStopCheck.httpGet.host", g.Host), validPort("preStopCheck.httpGet.port", g.Port))
	}
	return validCommand("preStopCheck.exec.command", c.Exec.Command)
}

// MaxQueryLength bounds an alert gate's PromQL query.
const MaxQueryLength = 4096

// AlertGate holds every upgrade while a Prometheus query returns series (a firing alert, say):
// the deciding node asks URL's /api/v1/query before it decides, every PeriodSeconds while it
// holds. A Prometheus that cannot be asked holds too.
type AlertGate struct {
	URL           string `json:"url"`
	Query         string `json:"query"`
	PeriodSeconds int    `json:"periodSeconds"`
}

func (a *AlertGate) validate() error {
	if a == nil { // optional
		return nil
	}
	if !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
		return fmt.Errorf("alertGate.url %q is not an http(s) URL", clip(a.URL))
	}
	if err := validURL(a.URL); err != nil {
		return fmt.Errorf("alertGate.url: %w", err)
	}
	if strings.TrimSpace(a.Query) == "" {
		return fmt.Errorf("alertGate.query is empty")
	}
	return firstErr(maxLen("alertGate.query", a.Query, MaxQueryLength), inRange("alertGate.periodSeconds", a.PeriodSeconds, 1, MaxProbeSeconds))
}
