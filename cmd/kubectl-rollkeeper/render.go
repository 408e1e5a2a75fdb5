package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/canstop"
	"github.com/rollkeeper/rollkeeper/internal/nodestate"
	"github.com/rollkeeper/rollkeeper/internal/plan"
)

// strategyLine sums up a service's gates beyond the quorum ("" without any).
func strategyLine(st v1alpha1.StrategySpec) string {
	var parts []string
	if c := st.Canary; c != nil {
		p := "canary " + c.Nodes.String()
		if c.BakeTime != nil {
			p += ", promoted after " + c.BakeTime.Duration.String() + " healthy"
		} else {
			p += ", then kubectl rollkeeper promote"
		}
		parts = append(parts, p)
	}
	if st.MaxUnavailable != nil {
		parts = append(parts, "maxUnavailable "+st.MaxUnavailable.String())
	}
	if t := st.Topology; t != nil {
		per := max(t.MaxUnavailablePerDomain, 1)
		p := fmt.Sprintf("by %s, %d node(s) per domain, one domain at a time", t.Key, per)
		if t.MinAvailablePerDomain != nil {
			p += ", minAvailablePerDomain " + t.MinAvailablePerDomain.String()
		}
		parts = append(parts, p)
	}
	if c := st.PreStopCheck; c != nil {
		what := "exec"
		if c.HTTPGet != nil {
			what = "httpGet"
		}
		parts = append(parts, "preStopCheck ("+what+")")
	}
	if a := st.AlertGate; a != nil {
		parts = append(parts, fmt.Sprintf("alertGate %s at %s", a.Query, a.URL))
	}
	if st.MaxFailures != nil {
		parts = append(parts, "maxFailures "+st.MaxFailures.String())
	}
	if st.MinHealthyTime != nil {
		parts = append(parts, "minHealthyTime "+st.MinHealthyTime.Duration.String())
	}
	for _, mw := range st.MaintenanceWindows {
		days := "daily"
		if len(mw.Days) > 0 {
			var ds []string
			for _, d := range mw.Days {
				ds = append(ds, string(d))
			}
			days = strings.Join(ds, ",")
		}
		tz := mw.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		parts = append(parts, fmt.Sprintf("window %s %s-%s %s", days, mw.Start, mw.End, tz))
	}
	return strings.Join(parts, "; ")
}

// renderStatus writes one RollingDeploy: a header, then per service (in deploy order, or only
// service) its counts and one row per node.
func renderStatus(w io.Writer, rd *v1alpha1.RollingDeploy, nodes map[string]*nodestate.Service, service string, wide bool) {
	st := rd.Status
	phase := string(st.Phase)
	if phase == "" {
		phase = "Unknown (the operator has not reported yet)"
	}
	fmt.Fprintf(w, "RollingDeploy %s: %s, %s nodes updated\n", rd.Name, phase, orDash(st.Progress))
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAborted); c != nil && c.Status == "True" {
		fmt.Fprintf(w, "  ABORTED: %s\n", c.Message)
	} else if rd.Spec.Paused {
		fmt.Fprintf(w, "  PAUSED: upgrades under way finish, no node starts a new one (kubectl rollkeeper resume %s)\n", rd.Name)
	}
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c != nil {
		fmt.Fprintf(w, "  Ready=%s %s", c.Status, c.Reason)
		if c.Message != "" && c.Status != "True" && c.Reason != v1alpha1.ReasonAborted {
			fmt.Fprintf(w, ": %s", c.Message)
		}
		fmt.Fprintln(w)
	}
	if st.ObservedGeneration != rd.Generation {
		fmt.Fprintf(w, "  (status describes generation %d; the spec is at generation %d)\n", st.ObservedGeneration, rd.Generation)
	}
	shown := 0
	for _, s := range st.Services {
		if service != "" && s.Name != service {
			continue
		}
		shown++
		fmt.Fprintln(w)
		renderService(w, s, nodes[s.Name], wide)
		if spec, ok := plan.ServiceByName(rd.Spec, s.Name); ok {
			if line := strategyLine(plan.Strategy(rd.Spec, spec)); line != "" {
				fmt.Fprintf(w, "  strategy: %s\n", line)
			}
		}
	}
	if shown == 0 && service != "" {
		fmt.Fprintf(w, "\nno service %s in the status of %s\n", service, rd.Name)
	}
}

// renderService writes a service's header and node rows. The counts are those of the rows shown
// (so they always add up), or of status.services[] when no rows are mirrored yet.
func renderService(w io.Writer, s v1alpha1.ServiceStatus, m *nodestate.Service, wide bool) {
	fmt.Fprintf(w, "SERVICE %s  target %s  %s  minAvailable %d\n", s.Name, s.TargetVersion, s.Phase, s.MinAvailable)
	if s.Gate != "" {
		fmt.Fprintf(w, "  waiting (%s gate): %s\n", s.Gate, s.Waiting)
	}
	if m == nil {
		fmt.Fprintf(w, "  nodes %d  online %d  updated %d  staged %d  upgrading %d  failed %d  unreachable %d\n",
			s.Total, s.Online, s.Updated, s.Staged, s.Upgrading, s.Failed, s.Unreachable)
		fmt.Fprintln(w, "  (no per-node state mirrored yet: the operator writes it once it has read the service from ZooKeeper)")
		return
	}
	count := map[v1alpha1.NodeState]int{}
	online := 0
	var done, total int64
	for _, n := range m.Nodes {
		count[n.State]++
		if n.Online {
			online++
		}
		done, total = done+n.DownloadedBytes, total+n.TotalBytes
	}
	fmt.Fprintf(w, "  nodes %d  online %d  updated %d  running %d  downloading %d  staged %d  upgrading %d  failed %d  unreachable %d",
		len(m.Nodes), online, count[v1alpha1.NodeUpdated], count[v1alpha1.NodeRunning], count[v1alpha1.NodeDownloading],
		count[v1alpha1.NodeStaged], count[v1alpha1.NodeUpgrading], count[v1alpha1.NodeFailed], count[v1alpha1.NodeUnreachable])
	if total > 0 {
		fmt.Fprintf(w, " (downloads %s)", progress(done, total))
	}
	if s.DownloadingFromOrigin > 0 {
		fmt.Fprintf(w, " (%d from the origin directly: no torrent in time)", s.DownloadingFromOrigin)
	}
	fmt.Fprintln(w)
	if m.Incomplete {
		fmt.Fprintln(w, "  (the operator is rewriting the node list: some rows may be missing or stale)")
	}
	if m.TargetVersion != s.TargetVersion {
		fmt.Fprintf(w, "  (node rows were mirrored for target %s)\n", m.TargetVersion)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	header := "NODE\tVERSION\tONLINE\tSTATE\tPROGRESS"
	if wide {
		header += "\tMESSAGE"
	}
	fmt.Fprintln(tw, header)
	for _, n := range m.Nodes {
		online := "no"
		if n.Online {
			online = "yes"
		}
		prog := ""
		if n.TotalBytes > 0 {
			prog = progress(n.DownloadedBytes, n.TotalBytes)
			if n.Message == nodestate.OriginMessage {
				prog += " from the origin"
			}
		}
		row := strings.Join([]string{n.Name, orDash(n.Version), online, string(n.State), orDash(prog)}, "\t")
		if wide {
			row += "\t" + orDash(n.Message)
		}
		fmt.Fprintln(tw, row)
	}
	_ = tw.Flush()
}

// renderCanStop writes the verdicts and a final yes/no line; it returns whether every verdict
// is yes.
func renderCanStop(w io.Writer, node string, verdicts []canstop.Verdict) bool {
	var no []string
	for _, v := range verdicts {
		answer := "yes"
		if !v.Yes {
			answer = "no"
			no = append(no, v.Service)
		}
		fmt.Fprintf(w, "%s (rollingdeploy %s): %s\n  %s\n", v.Service, v.Deploy, answer, v.Reason)
	}
	if len(no) > 0 {
		fmt.Fprintf(w, "no: %s cannot go down now without breaking the quorum of %s\n", node, strings.Join(no, ", "))
		return false
	}
	fmt.Fprintf(w, "yes: %s can go down now (%d service(s) checked); nothing was changed\n", node, len(verdicts))
	return true
}

// progress renders "45% (4.5 MiB/10.0 MiB)".
func progress(done, total int64) string {
	if total <= 0 {
		return ""
	}
	return fmt.Sprintf("%d%% (%s/%s)", done*100/total, humanBytes(done), humanBytes(total))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
