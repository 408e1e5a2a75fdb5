package zkmetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Before the client exists (the agent or operator still connecting) nothing is exported,
// rather than a session state of 0 that would read as "disconnected".
func TestNoSeriesWithoutClient(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(New(Names{SessionState: "x_session_state", Reconnects: "x_reconnects_total", Expirations: "x_expirations_total"}, "test"))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 0 {
		t.Fatalf("series without a client: %v", fams)
	}
}
