package cluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// runsDir records every running cluster (its directory, owner pid and the sysctls to restore),
// so the next Start can undo what a killed run (a test binary hitting its timeout) left on the
// host: containers outlive containerd in their shims, and mounts, cgroups and sysctls outlive
// every process.
const runsDir = "/run/rollkeeper-cluster"

type runRecord struct {
	PID     int               `json:"pid"`
	Dir     string            `json:"dir"`
	Sysctls map[string]string `json:"sysctls"`
	// Chains are the KUBE-* iptables chains that existed before the run.
	Chains map[string][]string `json:"chains"`
}

func recordPath(dir string) string {
	return filepath.Join(runsDir, strings.ReplaceAll(strings.Trim(dir, "/"), "/", "_")+".json")
}

func markRun(dir string) error {
	sys, err := readSysctls()
	if err != nil {
		return err
	}
	chains, err := kubeChains()
	if err != nil {
		return err
	}
	b, err := json.Marshal(runRecord{PID: os.Getpid(), Dir: dir, Sysctls: sys, Chains: chains})
	if err != nil {
		return fmt.Errorf("cluster: record run: %w", err)
	}
	if err := os.MkdirAll(runsDir, 0o755); err != nil {
		return fmt.Errorf("cluster: record run: %w", err)
	}
	if err := os.WriteFile(recordPath(dir), b, 0o644); err != nil {
		return fmt.Errorf("cluster: record run: %w", err)
	}
	return nil
}

func unmarkRun(dir string) error {
	if err := os.Remove(recordPath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// Sweep cleans up after every recorded cluster whose process is gone: it kills their
// containers, unmounts, removes cgroups and network namespaces, restores the sysctls and
// deletes their directories.
func Sweep(logf func(string, ...any)) {
	entries, _ := os.ReadDir(runsDir)
	for _, e := range entries {
		p := filepath.Join(runsDir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r runRecord
		if err := json.Unmarshal(b, &r); err != nil || r.Dir == "" || !filepath.IsAbs(r.Dir) {
			logf("cluster: sweep: dropping unreadable record %s: %v", p, err)
			_ = os.Remove(p)
			continue
		}
		if r.PID > 0 && syscall.Kill(r.PID, 0) == nil {
			continue // still running
		}
		logf("cluster: sweep: cleaning up after dead run %d in %s", r.PID, r.Dir)
		if err := cleanupHost(r.Dir, nil, logf); err != nil {
			logf("cluster: sweep: %v", err)
		}
		if err := writeSysctls(r.Sysctls); err != nil {
			logf("cluster: sweep: %v", err)
		}
		if r.Chains != nil {
			if err := removeKubeChains(r.Chains); err != nil {
				logf("cluster: sweep: %v", err)
			}
		}
		if err := os.RemoveAll(r.Dir); err != nil {
			logf("cluster: sweep: %v", err)
		}
		_ = os.Remove(p)
	}
}

// cleanupHost undoes what a node under dir leaves on the host once its kubelet and containerd
// stopped: shims and their container processes, mounts under dir, network namespaces created
// since (netnsPre lists those that existed before; nil means: only CNI's "cni-" ones), and
// kubelet's pod cgroups.
func cleanupHost(dir string, netnsPre map[string]bool, logf func(string, ...any)) error {
	var errs []error
	if err := killShims(dir, logf); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	for name := range listNetns() {
		if netnsPre[name] || (netnsPre == nil && !strings.HasPrefix(name, "cni-")) {
			continue
		}
		p := filepath.Join("/var/run/netns", name)
		_ = unix.Unmount(p, unix.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("cluster: remove netns %s: %w", name, err))
		}
	}
	if err := removePodCgroups(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killShims SIGKILLs every containerd shim started by the containerd under dir (their command
// line names its socket) and every process below them, and waits for them to go.
func killShims(dir string, logf func(string, ...any)) error {
	procs := processTable()
	var victims []int
	for pid, p := range procs {
		if strings.Contains(p.cmdline, "containerd-shim") && strings.Contains(p.cmdline, dir+"/") {
			victims = append(victims, descendants(procs, pid)...)
			victims = append(victims, pid)
		}
	}
	if len(victims) == 0 {
		return nil
	}
	logf("cluster: killing %d leftover shim and container processes", len(victims))
	for _, pid := range victims {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		alive := 0
		for _, pid := range victims {
			if isAlive(pid) {
				alive++
			}
		}
		if alive == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %d shim or container processes survive SIGKILL", alive)
		}
		time.Sleep(100 * time.Millisecond) // polling interval within the deadline
	}
}

// isAlive reports whether pid runs and is not a zombie (a zombie of ours is reaped by its
// parent's Wait, not by us).
func isAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

type procInfo struct {
	ppid    int
	cmdline string
}

func processTable() map[int]procInfo {
	m := map[int]procInfo{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		m[pid] = procInfo{ppid: ppid, cmdline: strings.ReplaceAll(string(cmd), "\x00", " ")}
	}
	return m
}

func descendants(procs map[int]procInfo, root int) []int {
	children := map[int][]int{}
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

type mount struct{ point, fstype string }

// mounts reads this process's mount table.
func mounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source super
		line := sc.Text()
		fields := strings.Fields(line)
		i := strings.Index(line, " - ")
		if len(fields) < 5 || i < 0 {
			continue
		}
		m := mount{point: unescapeMount(fields[4])}
		if f := strings.Fields(line[i+3:]); len(f) > 0 {
			m.fstype = f[0]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unmountUnder(dir string) error {
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("cluster: unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// MountsUnder reports the mount points left at or below dir (for tests that check teardown).
func MountsUnder(dir string) ([]string, error) { return mountsUnder(dir) }

func listNetns() map[string]bool {
	m := map[string]bool{}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		m[e.Name()] = true
	}
	return m
}

// cgroupRoots lists the mount points of the cgroup hierarchies (v1 controllers and v2).
func cgroupRoots() ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out, nil
}

// PodCgroups lists kubelet's pod cgroup trees ("kubepods") in every hierarchy.
func PodCgroups() ([]string, error) {
	roots, err := cgroupRoots()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range roots {
		for _, name := range []string{"kubepods", "k8s.io"} {
			p := filepath.Join(r, name)
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// removePodCgroups removes kubelet's pod cgroups (and containerd's k8s.io group), deepest
// first; a cgroup directory goes with rmdir once no process is in it.
func removePodCgroups() error {
	trees, err := PodCgroups()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range trees {
		var dirs []string
		_ = filepath.WalkDir(t, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			// Killed processes leave a cgroup only once reaped: EBUSY for a moment.
			deadline := time.Now().Add(10 * time.Second)
			for {
				err := unix.Rmdir(d)
				if err == nil || errors.Is(err, unix.ENOENT) {
					break
				}
				if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
					errs = append(errs, fmt.Errorf("cluster: remove cgroup %s: %w", d, err))
					break
				}
				time.Sleep(100 * time.Millisecond) // polling interval within the deadline
			}
		}
	}
	return errors.Join(errs...)
}
