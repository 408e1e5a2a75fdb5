package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fixtureEvent is a line of the fixtures' event log (cmd/fixture --event-log), decoded here
// on its own terms: the checker imports nothing of the agent or the operator.
type fixtureEvent struct {
	Time    time.Time `json:"time"`
	Node    string    `json:"node"`
	Service string    `json:"service"`
	Version string    `json:"version"`
	Event   string    `json:"event"` // serving, stopped; "vanished" is added by the pid watch
	Pid     int       `json:"pid"`
	Healthy bool      `json:"healthy"`
	// Detected is when a vanished process was found gone (Time is when it was last seen
	// alive: it is counted down from then, the conservative end of the window).
	Detected time.Time `json:"-"`
}

// groundTruth follows the event log and watches the pid of every instance that logged
// "serving" and not "stopped": one that disappears (SIGKILL leaves no line) gets a "vanished"
// event dated when it was last seen alive.
type groundTruth struct {
	path   string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	off      int64
	partial  []byte
	events   []fixtureEvent
	live     map[int]*liveInstance // by pid
	badLines []string
}

type liveInstance struct {
	ev       fixtureEvent
	lastSeen time.Time
}

func newGroundTruth(path string) *groundTruth {
	ctx, cancel := context.WithCancel(context.Background())
	g := &groundTruth{path: path, cancel: cancel, live: map[int]*liveInstance{}}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			g.poll()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return g
}

// Stop ends the polling after a last read.
func (g *groundTruth) Stop() {
	g.cancel()
	g.wg.Wait()
	g.poll()
}

// poll reads new log lines, then checks the pids of live instances.
func (g *groundTruth) poll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, err := os.Open(g.path); err == nil {
		if _, err := f.Seek(g.off, io.SeekStart); err == nil {
			data, _ := io.ReadAll(io.LimitReader(f, 16<<20))
			g.off += int64(len(data))
			g.partial = append(g.partial, data...)
		}
		f.Close()
	}
	for {
		i := bytes.IndexByte(g.partial, '\n')
		if i < 0 {
			break
		}
		line := g.partial[:i]
		g.partial = g.partial[i+1:]
		var ev fixtureEvent
		if err := json.Unmarshal(line, &ev); err != nil || ev.Pid <= 0 {
			if len(g.badLines) < 20 {
				g.badLines = append(g.badLines, string(line))
			}
			continue
		}
		g.events = append(g.events, ev)
		switch ev.Event {
		case "serving":
			g.live[ev.Pid] = &liveInstance{ev: ev, lastSeen: ev.Time}
		case "stopped":
			delete(g.live, ev.Pid)
		}
	}
	now := time.Now()
	for pid, li := range g.live {
		if alive(pid) {
			li.lastSeen = now
			continue
		}
		// Read the log once more: a "stopped" line written just before the exit wins.
		if g.stoppedLogged(pid) {
			delete(g.live, pid)
			continue
		}
		ev := li.ev
		ev.Event, ev.Time, ev.Detected = "vanished", li.lastSeen, now
		g.events = append(g.events, ev)
		delete(g.live, pid)
	}
}

// stoppedLogged reads the rest of the log looking for pid's "stopped" line (lines read here
// are processed on the next poll).
func (g *groundTruth) stoppedLogged(pid int) bool {
	f, err := os.Open(g.path)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(g.off, io.SeekStart); err != nil {
		return false
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev fixtureEvent
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Pid == pid && ev.Event == "stopped" {
			return true
		}
	}
	return false
}

// alive reports whether pid is a running (not zombie) fixture process. A reused pid runs
// another executable.
func alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	return err == nil && strings.Contains(filepath.Base(exe), "fixture")
}

// Events is a copy of every event so far, in log order (vanished events at detection).
func (g *groundTruth) Events() []fixtureEvent {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]fixtureEvent(nil), g.events...)
}

func (g *groundTruth) BadLines() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.badLines...)
}

func (e fixtureEvent) String() string {
	s := fmt.Sprintf("%s %s %s %s@%s pid %d", e.Time.Format("15:04:05.000"), e.Event, e.Node, e.Service, e.Version, e.Pid)
	if !e.Healthy {
		s += " (unhealthy)"
	}
	if !e.Detected.IsZero() {
		s += " (found gone at " + e.Detected.Format("15:04:05.000") + ")"
	}
	return s
}
