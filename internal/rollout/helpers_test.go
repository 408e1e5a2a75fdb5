package rollout

import (
	"fmt"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// Shared fixtures of next_test.go and read_test.go: one service "web" under the root /rk,
// nodes n1 (the deciding node), n2 and n3, each with its own session.

const (
	tSvc  = "web"
	sess1 = int64(0x101)
	sess2 = int64(0x102)
	sess3 = int64(0x103)
)

var tLay = zklayout.MustNew("/rk")

// child is a sequential child name: <name>-<counter, 10 digits>.
func child(name string, seq int) string { return fmt.Sprintf("%s-%010d", name, seq) }

func webLabels() map[string]string { return map[string]string{"role": "web"} }

// qe is a loaded, well-formed staging queue entry.
func qe(c string, owner int64, version, state string) QueueEntry {
	sn, err := zklayout.ParseSeq(c)
	if err != nil {
		panic(err)
	}
	return QueueEntry{Child: c, Node: sn.Name, Seq: sn.Seq, Loaded: true, Owner: owner, Version: 1,
		Staged: zklayout.Staged{Node: sn.Name, Version: version, State: state}}
}

// rg is a well-formed registration with the web labels.
func rg(node, version string, owner int64) Registration {
	return Registration{Node: node, Version: version, Labels: webLabels(), Owner: owner}
}

// de is a loaded, well-formed deploy queue entry of svc.
func de(svc string, seq int, version string, catchUp bool) DeployView {
	c := child(svc, seq)
	return DeployView{Child: c, Service: svc, Seq: int64(seq), Loaded: true, Version: 0,
		Entry: zklayout.DeployEntry{Deploy: "rd", Service: svc, Version: version, Generation: 1, CatchUp: catchUp}}
}

// installed reports the versions given as installed.
func installed(versions ...string) func(string) bool {
	return func(v string) bool {
		for _, w := range versions {
			if v == w {
				return true
			}
		}
		return false
	}
}

// Watch descriptions, "<kind>:<path>", as watchStrings renders a step's watches.
var (
	planW     = "data:" + tLay.StagingService(tSvc)
	queueW    = "children:" + tLay.StagingService(tSvc)
	currentW  = "children:" + tLay.CurrentService(tSvc)
	deployW   = "children:" + tLay.Deploy()
	failuresW = "children:" + tLay.FailureService(tSvc)
)

func predW(c string) string { return "data:" + tLay.StagingChild(tSvc, c) }
func tailW(c string) string { return "exists:" + tLay.StagingChild(tSvc, c) }

func watchStrings(ws []Watch) []string {
	var out []string
	for _, w := range ws {
		k := map[WatchKind]string{WatchData: "data", WatchChildren: "children", WatchExists: "exists"}[w.Kind]
		out = append(out, k+":"+w.Path)
	}
	return out
}
