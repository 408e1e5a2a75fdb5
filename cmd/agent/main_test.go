package main

import (
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/nodeagent"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

func TestOnNode(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{":9441", "10.0.0.5:9441"},
		{"", ""},
		{"0", "0"},
		{"0.0.0.0:9441", "0.0.0.0:9441"},
		{"127.0.0.1:9441", "127.0.0.1:9441"},
		{"[::]:9441", "[::]:9441"},
		{"nonsense", "nonsense"},
	} {
		if got := onNode(tc.addr, "10.0.0.5"); got != tc.want {
			t.Errorf("onNode(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if got := onNode(":9441", "fd00::5"); got != "[fd00::5]:9441" {
		t.Errorf("onNode on IPv6 = %q", got)
	}
}

// A host-less --metrics-addr serves on the node's address only: another address of the machine
// (here another loopback address) gets no answer. Before, ":9441" bound every interface.
func TestMetricsBindTheNodeAddress(t *testing.T) {
	ports, err := zkserver.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ports[0])
	stop, err := serveMetrics(onNode(":"+port, "127.0.0.2"), nodeagent.NewMetrics(), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://127.0.0.2:" + port + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics on the node address: %s", resp.Status)
	}
	if c, err := net.Dial("tcp", "127.0.0.3:"+port); err == nil {
		c.Close()
		t.Fatal("metrics answer on another address of the machine")
	}
}
