package zkserver

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

func TestStandaloneStarts(t *testing.T) {
	e, err := Start(context.Background(), t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	out, err := FourLetter(e.Servers[0].Addr(), "ruok")
	if err != nil || out != "imok\n" {
		t.Fatalf("ruok = %q, %v", out, err)
	}
}

// A port that another process binds between FreePorts and the server's start makes the server
// exit; Start picks new ports, and the log says why (the server's own log was empty when a
// classpath wildcard let the NOP logger win).
func TestStartPicksNewPortsWhenOneIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	calls := 0
	freePorts = func(n int) ([]int, error) {
		calls++
		ports, err := FreePorts(n)
		if calls == 1 && err == nil {
			ports[0] = takenPort
		}
		return ports, err
	}
	defer func() { freePorts = FreePorts }()

	// The failed attempt's log, read before Start cleans the directory for the next one.
	dir := t.TempDir()
	_, err = start(context.Background(), dir, 1)
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("start on a taken client port: %v, want errPortTaken", err)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("the error does not carry the server's log:\n%v", err)
	}

	calls = 0
	e, err := Start(context.Background(), dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if calls != 2 || e.Servers[0].ClientPort == takenPort {
		t.Fatalf("Start picked ports %d times, client port %d (taken %d)", calls, e.Servers[0].ClientPort, takenPort)
	}
	if out, err := FourLetter(e.Servers[0].Addr(), "ruok"); err != nil || out != "imok\n" {
		t.Fatalf("ruok = %q, %v", out, err)
	}
}

func TestFreePortsAvoidTheEphemeralRange(t *testing.T) {
	ports, err := FreePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p >= ephemeralLow() || p < 10000 || seen[p] {
			t.Fatalf("port %d: outside [10000, %d) or repeated in %v", p, ephemeralLow(), ports)
		}
		seen[p] = true
	}
}
