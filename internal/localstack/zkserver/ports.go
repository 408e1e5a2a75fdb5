package zkserver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// FreePorts hands out n distinct free loopback TCP ports and reserves them for the rest of
// this process's life, against every process that draws its ports here.
//
// They are drawn below the kernel's ephemeral range: a port from there (what binding port 0
// gives) can be taken as the source port of any outgoing connection before the caller binds
// it, and the apiserver, etcd and agents make many.
//
// The reservation is a lock (flock) on a file named for the port in PortLockDir, held until
// the process exits. Without it, a port was free again whenever its server was down: a test
// that stops ZooKeeper to simulate an outage (or kills an ensemble's leader) and starts it
// again on the same port found the port bound by another test package's ZooKeeper or control
// plane, and its clients talked to the wrong server. A port can still be bound by a process
// that does not draw here; callers that can tell (zookeeper's Start, the harness's control
// plane) pick again.
func FreePorts(n int) ([]int, error) {
	lo, hi := 10000, ephemeralLow()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if hi-lo < 1000 || tries > 1000 {
			// No room below the ephemeral range: let the kernel pick.
			if tries > 100000 {
				return nil, fmt.Errorf("free port: none left to reserve after %d tries", tries)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("free port: %w", err)
			}
			p := l.Addr().(*net.TCPAddr).Port
			ok, err := reserve(p)
			if err != nil || !ok {
				l.Close()
				if err != nil {
					return nil, err
				}
				continue
			}
			ls = append(ls, l)
			ports = append(ports, p)
			continue
		}
		p := lo + rand.IntN(hi-lo)
		ok, err := reserve(p)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			unreserve(p)
			continue
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	return ports, nil
}

// PortLockDir holds one lock file per port handed out by FreePorts in any process.
func PortLockDir() string { return filepath.Join(os.TempDir(), "rollkeeper-ports") }

// reservations holds the locked file of every port this process reserved. The locks go with
// the process (flock locks are released when their last descriptor closes, even on SIGKILL),
// so a crashed test leaves nothing reserved.
var reservations struct {
	sync.Mutex
	files map[int]*os.File
}

// reserve takes port p for this process; false if this or another process holds it.
func reserve(p int) (bool, error) {
	reservations.Lock()
	defer reservations.Unlock()
	if _, ok := reservations.files[p]; ok {
		return false, nil
	}
	dir := PortLockDir()
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return false, fmt.Errorf("reserve port %d: %w", p, err)
	}
	// Anyone may lock here (tests run as root and as users); the sticky bit keeps each
	// user's files their own. Best effort: the directory may belong to another user.
	_ = os.Chmod(dir, 0o777|os.ModeSticky)
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return false, nil // another user's lock file: theirs
		}
		return false, fmt.Errorf("reserve port %d: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("reserve port %d: lock %s: %w", p, f.Name(), err)
	}
	if reservations.files == nil {
		reservations.files = map[int]*os.File{}
	}
	reservations.files[p] = f
	return true, nil
}

// unreserve gives back a port this process reserved but could not bind.
func unreserve(p int) {
	reservations.Lock()
	defer reservations.Unlock()
	if f, ok := reservations.files[p]; ok {
		f.Close()
		delete(reservations.files, p)
	}
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 if unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	p, err := strconv.Atoi(f[0])
	if err != nil || p <= 0 || p > 65535 {
		return 32768
	}
	return p
}
