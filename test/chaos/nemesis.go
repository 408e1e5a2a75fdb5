package chaos

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

const (
	sigCont = syscall.SIGCONT
	sigStop = syscall.SIGSTOP
)

func syscallKill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// holdLimit bounds how long a fault waits for the state it is meant to cause.
const holdLimit = 90 * time.Second

// step publishes the step's versions and runs its faults: the ones drawn "before the step"
// are injected first and held while the new versions go out; each of the others fires once
// the observer saw its number of current/ changes since the publication. Then every
// fault is repaired and the step must settle.
func (r *run) step(ctx context.Context, step stepRecord, faults []fault) error {
	r.logf("chaos: step %d: %v -> %v", step.Index, step.Previous, step.Target)
	published := make(chan struct{})
	var wg sync.WaitGroup
	var pre, mid []fault
	for _, f := range faults {
		if f.After < 0 {
			pre = append(pre, f)
		} else {
			mid = append(mid, f)
		}
	}
	for _, f := range pre {
		injected := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.fire(ctx, f, published, func() { close(injected) })
		}()
		select {
		case <-injected:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := r.setVersions(ctx, step.Target, false); err != nil {
		close(published)
		wg.Wait()
		return fmt.Errorf("publish step %d: %w", step.Index, err)
	}
	close(published)
	base, _ := r.obs.Changes()
	// Each fault on its own trigger, so they overlap as the rollout goes on (one that holds
	// long, like a leader change, does not push the others past the rollout's end).
	for _, f := range mid {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.awaitChanges(ctx, base+f.After, 30*time.Second)
			r.fire(ctx, f, published, func() {})
		}()
	}
	wg.Wait()
	r.ensureRunning()
	return r.settle(ctx, step)
}

// awaitChanges waits until the observer counted n current/ changes, at most limit.
func (r *run) awaitChanges(ctx context.Context, n int, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		got, ch := r.obs.Changes()
		if got >= n {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// fire injects one fault, holds it and repairs it.
func (r *run) fire(ctx context.Context, f fault, published <-chan struct{}, injected func()) {
	var err error
	switch f.Kind {
	case faultKillAgent:
		err = r.killAgent(ctx, f, injected)
	case faultFreeze:
		err = r.freeze(ctx, f, injected)
	case faultCutOff:
		err = r.cutOff(ctx, f, injected)
	case faultZKLeader, faultZKFollower:
		err = r.killZooKeeper(ctx, f.Kind == faultZKLeader, injected)
	case faultAPIServer:
		err = r.stopAPIServer(ctx, injected)
	case faultOperator:
		err = r.killOperatorLeader(ctx, injected)
	case faultOrigin:
		err = r.originDown(ctx, published, injected)
	case faultDiskFull:
		err = r.diskFull(ctx, f, published, injected)
	case faultCorruptPeer:
		err = r.corruptPeer(ctx, f, injected)
	case faultCrashAgent:
		err = r.crashAgent(ctx, f, injected)
	default:
		err = fmt.Errorf("unknown fault %q", f.Kind)
	}
	if err != nil {
		r.note("fault %s: %v", f, err)
	}
}

// killAgent crashes a node's machine (its agent and host services get SIGKILL) and starts the
// agent again, at once or (Long) once its session expired.
func (r *run) killAgent(ctx context.Context, f fault, injected func()) error {
	_, err := r.killAndRestart(ctx, f, injected, false)
	return err
}

// crashAgent SIGKILLs a node's agent alone and starts it again, at once or (Long) once its
// session expired. The checker then finds every host service that served on the node at the
// crash ended only by a later agent's voluntary stop, or still serving (checkAgentCrashes).
func (r *run) crashAgent(ctx context.Context, f fault, injected func()) error {
	at := time.Now()
	restarted, err := r.killAndRestart(ctx, f, injected, true)
	if !restarted.IsZero() {
		r.mu.Lock()
		r.crashes = append(r.crashes, agentCrash{Node: f.Node, At: at, Restarted: restarted})
		r.mu.Unlock()
	}
	return err
}

// killAndRestart SIGKILLs f.Node's agent (agentOnly) or whole machine, waits for its session to
// expire if f.Long, and starts the agent again; it returns when the agent was started again
// (zero if the kill failed).
func (r *run) killAndRestart(ctx context.Context, f fault, injected func(), agentOnly bool) (time.Time, error) {
	n := r.stack.NodeByName(f.Node)
	up := r.down(n.Name, f.Kind)
	defer up()
	kill, what := n.Kill, "SIGKILL agent %s"
	if agentOnly {
		kill, what = n.KillAgent, "SIGKILL agent %s alone (its host services keep running)"
	}
	if err := kill(); err != nil {
		injected()
		return time.Time{}, err
	}
	r.inject(what, n.Name)
	injected()
	if f.Long {
		if err := r.awaitGone(ctx, n.Name); err != nil {
			r.note("%s's registrations did not vanish: %v", n.Name, err)
		} else {
			r.inject("agent %s's session expired", n.Name)
		}
	}
	err := n.Start()
	restarted := time.Now()
	if err != nil {
		return restarted, err
	}
	r.inject("agent %s restarted", n.Name)
	return restarted, nil
}

// awaitGone waits until node is in no current/ and no staging/ of any service: its session
// expired.
func (r *run) awaitGone(ctx context.Context, node string) error {
	ctx, cancel := context.WithTimeout(ctx, holdLimit)
	defer cancel()
	return r.obs.waitFor(ctx, func() bool {
		for _, svc := range services {
			if _, ok := r.obs.Latest(svc, "current")[node]; ok {
				return false
			}
			if _, ok := r.obs.Latest(svc, "staging")[node]; ok {
				return false
			}
		}
		return true
	})
}

// freeze stops (SIGSTOP) the agent of a node that is upgrading, past its session timeout,
// checks the status calls it unreachable, and lets it go on.
func (r *run) freeze(ctx context.Context, f fault, injected func()) error {
	defer injected()
	target := ""
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	_ = r.obs.waitFor(wctx, func() bool {
		for _, svc := range services {
			if u := upgrading(r.obs.Latest(svc, "staging")); len(u) > 0 {
				target = u[0]
				return true
			}
		}
		return false
	})
	cancel()
	if target == "" {
		target = harness.NodeName(1)
		r.note("no node was upgrading within 60s: freezing %s instead", target)
	}
	n := r.stack.NodeByName(target)
	up := r.down(n.Name, f.Kind)
	defer up()
	if err := n.Freeze(); err != nil {
		return err
	}
	r.inject("SIGSTOP agent %s (mid-upgrade)", n.Name)
	defer func() {
		if err := n.Thaw(); err != nil {
			r.note("thaw %s: %v", n.Name, err)
		}
		r.inject("SIGCONT agent %s", n.Name)
	}()
	if err := r.awaitGone(ctx, n.Name); err != nil {
		return fmt.Errorf("%s's session did not expire: %w", n.Name, err)
	}
	r.inject("agent %s's session expired", n.Name)
	r.expectUnreachable(ctx, n.Name, "frozen")
	return nil
}

// cutOff blackholes a node's traffic to ZooKeeper (its agent keeps running) past its session
// timeout, checks the status, and heals.
func (r *run) cutOff(ctx context.Context, f fault, injected func()) error {
	defer injected()
	px := r.prox[f.Node]
	up := r.down(f.Node, f.Kind)
	defer up()
	px.Cut()
	r.inject("cut %s off from ZooKeeper", f.Node)
	defer func() {
		px.Heal()
		r.inject("%s reconnected to ZooKeeper", f.Node)
	}()
	if err := r.awaitGone(ctx, f.Node); err != nil {
		return fmt.Errorf("%s's session did not expire: %w", f.Node, err)
	}
	r.inject("agent %s's session expired", f.Node)
	r.expectUnreachable(ctx, f.Node, "cut off")
	return nil
}

// expectUnreachable records whether the status named node unreachable while it was away.
func (r *run) expectUnreachable(ctx context.Context, node, how string) {
	r.expectStatus(ctx, fmt.Sprintf("status: %s node %s reported unreachable", how, node), node+" unreachable", 60*time.Second,
		func(rd *v1alpha1.RollingDeploy) bool {
			for _, st := range rd.Status.Services {
				for _, u := range st.UnreachableNodes {
					if u == node {
						return true
					}
				}
			}
			return false
		})
}

// expectStatus records as the result name whether the RollingDeploy's status met cond within
// timeout, with the status (or the error) as evidence.
func (r *run) expectStatus(ctx context.Context, name, what string, timeout time.Duration, cond func(*v1alpha1.RollingDeploy) bool) {
	res := result{Name: name}
	rd, err := r.stack.WaitForRD(ctx, rdName, timeout, what, cond)
	res.Pass = err == nil
	if err != nil {
		res.Evidence = append(res.Evidence, err.Error())
	} else {
		res.Evidence = append(res.Evidence, strings.ReplaceAll(harness.DescribeStatus(rd), "\n", "\n      "))
	}
	r.addResult(res)
}

func (r *run) killZooKeeper(ctx context.Context, leader bool, injected func()) error {
	defer injected()
	// One ZooKeeper server down at a time: the ensemble keeps its quorum.
	r.zkMu.Lock()
	defer r.zkMu.Unlock()
	var victim *zkserver.Server
	for _, srv := range r.stack.ZooKeeper.Servers {
		out, err := zkserver.FourLetter(srv.Addr(), "srvr")
		if err != nil {
			continue
		}
		if strings.Contains(out, "Mode: leader") == leader {
			victim = srv
			break
		}
	}
	if victim == nil {
		return fmt.Errorf("no ZooKeeper server in the wanted role (leader %t)", leader)
	}
	role := "follower"
	if leader {
		role = "leader"
	}
	victim.Stop()
	r.inject("killed ZooKeeper %s %s", role, victim.Addr())
	wctx, cancel := context.WithTimeout(ctx, holdLimit)
	err := harness.WaitFor(wctx, holdLimit, "the other two ZooKeeper servers to serve", func(context.Context) (bool, error) {
		for _, srv := range r.stack.ZooKeeper.Servers {
			if srv == victim {
				continue
			}
			out, err := zkserver.FourLetter(srv.Addr(), "srvr")
			if err != nil || !strings.Contains(out, "Mode: ") {
				return false, nil
			}
		}
		return true, nil
	})
	cancel()
	if err != nil {
		r.note("%v", err)
	}
	r.holdFor(ctx, 2, 10*time.Second)
	if err := victim.Start(); err != nil {
		return err
	}
	if err := victim.WaitReady(ctx, holdLimit); err != nil {
		return err
	}
	r.inject("ZooKeeper %s %s back", role, victim.Addr())
	return nil
}

// holdFor keeps a fault on until the observer saw n more changes, at most limit: the rollout
// must make progress (or try to) while it lasts.
func (r *run) holdFor(ctx context.Context, n int, limit time.Duration) {
	got, _ := r.obs.Changes()
	r.awaitChanges(ctx, got+n, limit)
}

// apiServerPid finds the kube-apiserver this process started (envtest's child).
func apiServerPid() int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || filepath.Base(exe) != "kube-apiserver" {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "PPid:") && strings.TrimSpace(strings.TrimPrefix(l, "PPid:")) == self {
				pid, _ := strconv.Atoi(e.Name())
				return pid
			}
		}
	}
	return 0
}

// stopAPIServer freezes kube-apiserver (SIGSTOP: it answers nobody) while the rollout goes on.
func (r *run) stopAPIServer(ctx context.Context, injected func()) error {
	defer injected()
	pid := apiServerPid()
	if pid == 0 {
		return fmt.Errorf("kube-apiserver not found among this process's children")
	}
	if err := syscallKill(pid, sigStop); err != nil {
		return err
	}
	r.inject("API server stopped (SIGSTOP pid %d)", pid)
	// Long enough for the agents to go on alone, and often past the operator's lease.
	r.holdFor(ctx, 10, 25*time.Second)
	if err := syscallKill(pid, sigCont); err != nil {
		return err
	}
	r.inject("API server back")
	return nil
}

// leader finds the operator replica holding the Lease: the running one that logged its
// acquisition since its last start.
func (r *run) leader() *harness.Process {
	for _, op := range r.ops {
		if !op.Running() {
			continue
		}
		log := op.Log()
		if i := strings.LastIndex(log, "=== harness: start"); i >= 0 {
			log = log[i:]
		}
		if strings.Contains(log, "Successfully acquired lease") || strings.Contains(log, "successfully acquired lease") {
			return op
		}
	}
	return nil
}

func (r *run) killOperatorLeader(ctx context.Context, injected func()) error {
	defer injected()
	l := r.leader()
	if l == nil {
		return fmt.Errorf("no operator replica holds the lease")
	}
	if err := l.Kill(); err != nil {
		return err
	}
	killed := time.Now()
	r.inject("SIGKILL operator leader %s", l.Name)
	err := harness.WaitFor(ctx, holdLimit, "another operator replica to take the lease", func(context.Context) (bool, error) {
		nl := r.leader()
		return nl != nil && nl != l, nil
	})
	if err != nil {
		r.note("%v", err)
	} else {
		r.inject("operator leadership moved to %s after %s", r.leader().Name, time.Since(killed).Round(time.Millisecond))
	}
	if err := l.Start(); err != nil {
		return err
	}
	r.inject("%s restarted", l.Name)
	return nil
}

func (r *run) artifactNames(versions map[string]string) []string {
	var out []string
	for _, svc := range services {
		name := svc + "-" + versions[svc]
		if versions[svc] == "v3" && svc == r.plan.Unhealthy {
			name += "-unhealthy"
		}
		out = append(out, name+".tar.gz")
	}
	return out
}

// originDown makes the artifact server answer 503 for the step's artifacts.
func (r *run) originDown(ctx context.Context, published <-chan struct{}, injected func()) error {
	r.mu.Lock()
	versions := maps.Clone(r.versions)
	r.mu.Unlock()
	// Before the step, r.versions are still the previous ones: take the next version's names.
	select {
	case <-published:
	default:
		for _, svc := range services {
			versions[svc] = map[string]string{"v1": "v2", "v2": "v3"}[versions[svc]]
		}
	}
	names := r.artifactNames(versions)
	for _, n := range names {
		r.stack.Artifacts.Fail(n, 503)
	}
	r.inject("origin down for %v", names)
	injected()
	select {
	case <-published:
	case <-ctx.Done():
	}
	r.holdFor(ctx, 10, 25*time.Second)
	for _, n := range names {
		r.stack.Artifacts.Fail(n, 0)
	}
	r.inject("origin back")
	return nil
}

// diskFull fills the node's tmpfs state dir before the step, checks the failure shows in
// status, and frees the space.
func (r *run) diskFull(ctx context.Context, f fault, published <-chan struct{}, injected func()) error {
	n := r.stack.NodeByName(f.Node)
	ballast := filepath.Join(n.StateDir, "ballast")
	out, _ := exec.Command("sh", "-c", "dd if=/dev/zero of="+ballast+" bs=1M 2>&1 || true").CombinedOutput()
	r.inject("filled %s's disk (%s)", n.Name, strings.TrimSpace(lastLine(string(out))))
	injected()
	defer func() {
		_ = os.Remove(ballast)
		r.inject("freed %s's disk", n.Name)
	}()
	select {
	case <-published:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.expectStatus(ctx, fmt.Sprintf("status: %s's full disk reported (Artifact failure, no space left)", n.Name), n.Name+"'s artifact failure", holdLimit,
		func(rd *v1alpha1.RollingDeploy) bool {
			for _, st := range rd.Status.Services {
				for _, fl := range st.FailedNodes {
					if fl.Node == n.Name && fl.Kind == "Artifact" && strings.Contains(strings.ToLower(fl.Reason), "no space") {
						return true
					}
				}
			}
			return false
		})
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// corruptPeer flips a byte in every 16 KiB (the smallest piece) of what a node seeds, once it
// has the step's version: its peers must detect the bad pieces and get them elsewhere.
func (r *run) corruptPeer(ctx context.Context, f fault, injected func()) error {
	defer injected()
	n := r.stack.NodeByName(f.Node)
	r.mu.Lock()
	target := r.versions["a"]
	r.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	_ = r.obs.waitFor(wctx, func() bool {
		for _, svc := range services {
			if strings.HasSuffix(r.obs.Latest(svc, "staging")[n.Name], " "+target) || r.obs.Latest(svc, "current")[n.Name] == target {
				return true
			}
		}
		return false
	})
	cancel()
	files, flipped := 0, 0
	err := filepath.WalkDir(filepath.Join(n.StateDir, "torrent", "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		fh, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil
		}
		defer fh.Close()
		st, err := fh.Stat()
		if err != nil {
			return nil
		}
		files++
		b := make([]byte, 1)
		for off := int64(7); off < st.Size(); off += 16 << 10 {
			if _, err := fh.ReadAt(b, off); err != nil {
				break
			}
			b[0] ^= 0xff
			if _, err := fh.WriteAt(b, off); err != nil {
				break
			}
			flipped++
		}
		return nil
	})
	r.inject("corrupted %s's seeded data: %d bytes flipped in %d files", n.Name, flipped, files)
	return err
}

// ensureRunning restarts operator replicas and agents that exited on their own (an operator
// that lost its lease exits, by design); each restart is noted.
func (r *run) ensureRunning() {
	for _, op := range r.ops {
		if !op.Running() {
			r.note("%s had exited (%v): restarted", op.Name, op.ExitErr())
			if err := op.Start(); err != nil {
				r.note("restart %s: %v", op.Name, err)
			}
		}
	}
	for _, n := range r.stack.Nodes {
		if !n.Agent.Running() {
			r.note("agent %s had exited (%v): restarted", n.Name, n.Agent.ExitErr())
			if err := n.Start(); err != nil {
				r.note("restart agent %s: %v", n.Name, err)
			}
		}
	}
}

// settle waits for the step's end state and records the end-state invariants.
func (r *run) settle(ctx context.Context, step stepRecord) error {
	exp := expected(step)
	var last map[string]map[string]string
	converged := harness.WaitFor(ctx, 6*time.Minute, fmt.Sprintf("step %d end state %v", step.Index, exp), func(ctx context.Context) (bool, error) {
		r.ensureRunning()
		last = map[string]map[string]string{}
		ok := true
		for _, svc := range services {
			got, err := r.stack.ServiceVersions(ctx, svc)
			if err != nil {
				return false, err
			}
			last[svc] = got
			for _, v := range got {
				ok = ok && v == exp[svc]
			}
		}
		return ok, nil
	})
	if converged != nil {
		// The last poll ran out with WaitFor's deadline: probe once more for the real state.
		last = map[string]map[string]string{}
		for _, svc := range services {
			if got, err := r.stack.ServiceVersions(ctx, svc); err == nil {
				last[svc] = got
			}
		}
	}
	// Versions: every node ends on what the step must leave.
	res := result{Name: fmt.Sprintf("step %d: every node ends on the target %v (a halted service and those after it in the deploy order on the previous)", step.Index, exp), Pass: converged == nil}
	stopped := result{Name: fmt.Sprintf("step %d: no host service left stopped on a healthy node", step.Index), Pass: true}
	for _, svc := range services {
		for _, node := range sortedKeys(last[svc]) {
			v := last[svc][node]
			if v != exp[svc] {
				res.Evidence = append(res.Evidence, fmt.Sprintf("%s on %s: %s", svc, node, v))
			}
			if strings.HasPrefix(v, "down") {
				stopped.Pass = false
				stopped.Evidence = append(stopped.Evidence, fmt.Sprintf("%s on %s: %s", svc, node, v))
			}
		}
	}
	if converged != nil {
		res.Evidence = append(res.Evidence, converged.Error())
	}
	r.addResult(res)
	r.addResult(stopped)

	// Status: Ready, or the halt reported with the failing node and reason; every failure in
	// ZooKeeper shows in status.
	status := result{Name: fmt.Sprintf("step %d: status reports the outcome and every failure", step.Index), Pass: true}
	var rd *v1alpha1.RollingDeploy
	var err error
	if step.Unhealthy == "" {
		rd, err = r.stack.WaitForReady(ctx, rdName, 3*time.Minute)
	} else {
		// Nodes that decided before the failure beyond the budget was recorded finish their
		// upgrade and may fail too: the halt is settled once the service is Failed (beyond
		// maxFailures: a tolerated failure leaves it Progressing), nobody upgrades and the
		// status shows every failure ZooKeeper holds for the service.
		rd, err = r.stack.WaitForRD(ctx, rdName, 3*time.Minute, "halt of "+step.Unhealthy+" reported, settled", func(rd *v1alpha1.RollingDeploy) bool {
			st := harness.ServiceStatus(rd, step.Unhealthy)
			if !harness.Observed(rd) || st == nil || st.Upgrading != 0 || st.Phase != v1alpha1.PhaseFailed {
				return false
			}
			shown, reported := map[string]bool{}, false
			for _, fl := range st.FailedNodes {
				shown[fl.Node] = true
				reported = reported || (fl.Kind == "HealthCheck" && fl.Node != "" && fl.Reason != "")
			}
			fails, ferr := r.obs.failures(step.Unhealthy)
			if ferr != nil || !reported {
				return false
			}
			for node := range fails {
				if !shown[node] {
					return false
				}
			}
			return true
		})
	}
	if err != nil {
		status.Pass = false
		status.Evidence = append(status.Evidence, err.Error())
	}
	for _, svc := range services {
		fails, ferr := r.obs.failures(svc)
		if ferr != nil {
			status.Evidence = append(status.Evidence, ferr.Error())
			continue
		}
		var st *v1alpha1.ServiceStatus
		if rd != nil {
			st = harness.ServiceStatus(rd, svc)
		}
		for _, node := range sortedKeys(fails) {
			shown := false
			if st != nil {
				for _, fl := range st.FailedNodes {
					shown = shown || fl.Node == node
				}
			}
			if !shown {
				status.Pass = false
				status.Evidence = append(status.Evidence, fmt.Sprintf("failures/%s/%s (%s) not in status", svc, node, fails[node]))
			} else {
				status.Evidence = append(status.Evidence, fmt.Sprintf("failures/%s/%s (%s) in status", svc, node, fails[node]))
			}
		}
	}
	if rd != nil {
		status.Evidence = append(status.Evidence, strings.ReplaceAll(harness.DescribeStatus(rd), "\n", "\n      "))
	}
	r.addResult(status)
	if step.Unhealthy != "" {
		// The failure budget: the service halted only once more nodes failed than it tolerates.
		budget := result{Name: fmt.Sprintf("step %d: %s halted beyond its failure budget (maxFailures %d)", step.Index, step.Unhealthy, maxFailures)}
		fails, ferr := r.obs.failures(step.Unhealthy)
		switch {
		case ferr != nil:
			budget.Evidence = append(budget.Evidence, ferr.Error())
		default:
			var failed []string
			for _, node := range sortedKeys(fails) {
				if strings.HasPrefix(fails[node], "HealthCheck "+step.Target[step.Unhealthy]+":") {
					failed = append(failed, node)
				}
			}
			budget.Pass = len(failed) > int(maxFailures)
			budget.Evidence = append(budget.Evidence, fmt.Sprintf("%d health check failure(s) of %s recorded: %v", len(failed), step.Target[step.Unhealthy], failed))
		}
		r.addResult(budget)
	}
	if converged != nil {
		return converged
	}
	return nil
}
