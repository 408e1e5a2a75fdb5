package backend

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupLine is one line of /proc/<pid>/cgroup: hierarchy id, controllers, path.
type cgroupLine struct{ id, controllers, path string }

func readCgroups(pid string) ([]cgroupLine, error) {
	f, err := os.Open("/proc/" + pid + "/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 {
			out = append(out, cgroupLine{parts[0], parts[1], parts[2]})
		}
	}
	return out, sc.Err()
}

// leaveCgroups moves pid from the agent's cgroups into those of the host's PID 1, in every
// hierarchy (cgroup v1 controllers, named hierarchies, the v2 unified one). In a container the
// agent's /sys/fs/cgroup shows only its own cgroups, so each hierarchy is mounted afresh in a
// private directory under dir, which shows it whole (from the root of the agent's cgroup
// namespace). In a private cgroup namespace (the usual case on cgroup v2) the host's cgroups
// are out of reach and this fails: use the systemd backend there.
func leaveCgroups(dir string, pid int) error {
	own, err := readCgroups("self")
	if err != nil {
		return fmt.Errorf("leave cgroups: %w", err)
	}
	target := map[string]string{}
	if init, err := readCgroups("1"); err == nil {
		for _, l := range init {
			target[l.id+":"+l.controllers] = l.path
		}
	}
	var errs []error
	for _, l := range own {
		to, ok := target[l.id+":"+l.controllers]
		if !ok {
			to = "/" // PID 1 unreadable (or not in that hierarchy): the hierarchy's root
		}
		if to == l.path {
			continue
		}
		if strings.Contains(to, "..") || strings.Contains(l.path, "..") {
			errs = append(errs, fmt.Errorf("hierarchy %s:%s: PID 1's cgroup %s is outside this cgroup namespace", l.id, l.controllers, to))
			continue
		}
		if err := moveInto(dir, l, to, pid); err != nil {
			errs = append(errs, fmt.Errorf("hierarchy %s:%s: %w", l.id, l.controllers, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("leave cgroups: %w", err)
	}
	return nil
}

// moveInto mounts l's hierarchy on a temporary directory and writes pid into cgroup to there.
func moveInto(dir string, l cgroupLine, to string, pid int) error {
	fstype, data := "cgroup", l.controllers
	switch {
	case l.id == "0" && l.controllers == "":
		fstype, data = "cgroup2", ""
	case strings.HasPrefix(l.controllers, "name="):
		data = "none," + l.controllers
	}
	mnt, err := os.MkdirTemp(dir, ".cgroup-")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	if err := unix.Mount("cgroup", mnt, fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data); err != nil {
		return fmt.Errorf("mount %s %s: %w", fstype, data, err)
	}
	defer func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) }()
	procs := filepath.Join(mnt, filepath.Clean("/"+to), "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move to %s: %w", to, err)
	}
	return nil
}
