package zkserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
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
	_, err = start(context.Background(), dir, 1, Options{})
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

// A port handed out stays reserved while its process lives, against other processes (a test
// package's ZooKeeper stopped for an outage must find its port free when it starts again),
// and is free again once that process is gone, even killed.
func TestFreePortsReserveAcrossProcesses(t *testing.T) {
	if os.Getenv("ZKSERVER_TEST_HOLD_PORTS") != "" {
		ports, err := FreePorts(3)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(ports[0], ports[1], ports[2])
		_, _ = io.Copy(io.Discard, os.Stdin) // hold until the parent closes stdin
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFreePortsReserveAcrossProcesses$")
	cmd.Env = append(os.Environ(), "ZKSERVER_TEST_HOLD_PORTS=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v (%q)", err, line)
	}
	var held [3]int
	if _, err := fmt.Sscan(line, &held[0], &held[1], &held[2]); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}

	// Nothing is bound on the helper's ports, yet they are not ours to take.
	for _, p := range held {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d is bound; the reservation should not bind it: %v", p, err)
		}
		l.Close()
		if ok, err := reserve(p); ok || err != nil {
			t.Fatalf("reserve(%d) held by another process = %v, %v; want false", p, ok, err)
		}
	}
	// Nor ours twice.
	mine, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := reserve(mine[0]); ok || err != nil {
		t.Fatalf("reserve(%d) handed out here already = %v, %v; want false", mine[0], ok, err)
	}

	// Killed, the helper holds nothing.
	_ = stdin // kept open until the kill, so the helper cannot exit on its own
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for _, p := range held {
		if ok, err := reserve(p); !ok || err != nil {
			t.Fatalf("reserve(%d) after its holder died = %v, %v; want true", p, ok, err)
		}
		unreserve(p)
	}
}

// A restarted server whose port another ZooKeeper took meanwhile must not pass for ready:
// clients would talk to the other server. WaitReady tells them apart by data directory.
func TestWaitReadyRejectsAnotherServerOnItsPort(t *testing.T) {
	ctx := context.Background()
	other, err := Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Stop()
	me, err := Start(ctx, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer me.Stop()
	s := me.Servers[0]
	s.Stop()
	// As if the other server had drawn s's port while s was down.
	s.ClientPort = other.Servers[0].ClientPort
	err = s.WaitReady(ctx, 30*time.Second)
	if !errors.Is(err, errPortTaken) || !strings.Contains(err.Error(), other.Servers[0].Dir) {
		t.Fatalf("WaitReady with another server on the port: %v; want errPortTaken naming %s", err, other.Servers[0].Dir)
	}
}
