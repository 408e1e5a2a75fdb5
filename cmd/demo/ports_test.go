package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A fixed port the sample uses that another demo holds on a node address is named.
func TestBusyPortNamesTheConflict(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.3 (all of 127.0.0.0/8 is loopback on Linux; the demo needs it): %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	sample := filepath.Join(t.TempDir(), "rd.yaml")
	if err := os.WriteFile(sample, []byte(fmt.Sprintf("spec:\n  healthCheck:\n    httpGet:\n      port: %d\n", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := busyPort(sample, 3)
	if err != nil || !strings.Contains(busy, fmt.Sprintf("port %d on 127.0.0.3 (node-2)", port)) {
		t.Fatalf("busyPort = %q, %v; want port %d on 127.0.0.3 (node-2)", busy, err, port)
	}
	ln.Close()
	if busy, err := busyPort(sample, 3); err != nil || busy != "" {
		t.Fatalf("after the other demo stopped: busyPort = %q, %v; want none", busy, err)
	}
}
