package localstack

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/localstack/zkserver"
)

// A port another process binds between being drawn and kube-apiserver binding it made the start
// fail for good (envtest's own retries reuse the same ports): StartControlPlane draws new ports.
// kube-apiserver's and etcd's output is kept in the directory.
func TestControlPlaneStartPicksNewPortsWhenOneIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	calls := 0
	controlPlanePorts = func(n int) ([]int, error) {
		calls++
		ports, err := zkserver.FreePorts(n)
		if calls == 1 && err == nil {
			ports[2] = takenPort // kube-apiserver's secure port
		}
		return ports, err
	}
	defer func() { controlPlanePorts = zkserver.FreePorts }()

	dir := t.TempDir()
	cp, err := StartControlPlaneWith(dir, ControlPlaneOptions{NoCRDs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	u, err := url.Parse(cp.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || u.Port() == strconv.Itoa(takenPort) {
		t.Fatalf("ports drawn %d times, API server on %s (taken: %d)", calls, u.Port(), takenPort)
	}
	for _, name := range []string{"kube-apiserver.log", "etcd.log"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: want the process's output: %v", name, err)
		}
	}
}
