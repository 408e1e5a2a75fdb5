package backend

import (
	"context"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// procIDs reads the Uid, Gid and Groups lines of /proc/<pid>/status.
func procIDs(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "Uid" || k == "Gid" || k == "Groups") {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out
}

// runAsUser and runAsGroup: the service runs as that user (real, effective, saved and fs ids),
// with that group only, and a restarted agent still recognizes and adopts it.
func TestExecRunAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change user")
	}
	dir := t.TempDir()
	e, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	id := uint32(65534)
	// Dir "/": the service's user cannot enter the test's private temp dir.
	spec := Spec{Version: "v1", Dir: "/", Command: []string{"/bin/sleep", "300"}, StopGrace: time.Second,
		RunAsUser: &id, RunAsGroup: &id}
	if err := e.Start(context.Background(), "a", spec); err != nil {
		t.Fatal(err)
	}
	pid := e.Status("a").PID
	environ(t, pid)
	want := map[string]string{"Uid": "65534 65534 65534 65534", "Gid": "65534 65534 65534 65534", "Groups": "65534"}
	if got := procIDs(t, pid); !maps.Equal(got, want) {
		t.Fatalf("/proc/%d/status ids = %q, want %q", pid, got, want)
	}
	e.Close()
	e2, err := NewExec(dir, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.StopAll(context.Background()) })
	if st := e2.Status("a"); !st.Running || st.PID != pid {
		t.Fatalf("after an agent restart: status = %+v, want pid %d adopted", st, pid)
	}
}

func TestExecRefusesAGroupWithoutAUser(t *testing.T) {
	e, err := NewExec(t.TempDir(), testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	id := uint32(65534)
	err = e.Start(context.Background(), "a", Spec{Version: "v1", Command: []string{"/bin/true"}, RunAsGroup: &id})
	if err == nil || !strings.Contains(err.Error(), "together") {
		t.Fatalf("Start with runAsGroup only = %v, want an error", err)
	}
}
