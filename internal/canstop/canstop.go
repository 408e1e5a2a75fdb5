// Package canstop answers, from a service's mirrored node states, whether the quorum would let
// one more node go down now: the agents' own rule (rollout.MayStop) applied to the quorum the
// operator resolved (status.services[].minAvailable, the value in the service's plan). It
// changes nothing.
package canstop

import (
	"fmt"
	"strings"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/nodestate"
	"github.com/rollkeeper/rollkeeper/internal/rollout"
)

// maxListed caps the down nodes a reason names.
const maxListed = 10

// Input is one service of one RollingDeploy and the node asked about.
type Input struct {
	Deploy  string
	Service string
	Node    string
	// MinAvailable is the service's resolved quorum (status.services[].minAvailable): the
	// agents' value, not the spec's (a percentage, resolved against the selected Nodes).
	MinAvailable int
	// Nodes are the service's mirrored node states.
	Nodes []v1alpha1.NodeEntry
}

// Down is a node of the service that is not online.
type Down struct {
	Name  string
	State v1alpha1.NodeState
}

// Verdict is the answer for one service.
type Verdict struct {
	Deploy, Service, Node string
	// Yes: the node may go down without breaking the quorum.
	Yes bool
	// Online counts the service's online nodes (including the node asked about, if online);
	// MinAvailable is the resolved quorum.
	Online       int
	MinAvailable int
	// NodeOnline says the node asked about is online now.
	NodeOnline bool
	// Down are the service's nodes already down, by name.
	Down []Down
	// Reason explains the answer in one line.
	Reason string
}

// Decide answers for one service. The node must be one of in.Nodes.
func Decide(in Input) (Verdict, error) {
	v := Verdict{Deploy: in.Deploy, Service: in.Service, Node: in.Node}
	found := false
	for _, n := range in.Nodes {
		if n.Online {
			v.Online++
		} else {
			v.Down = append(v.Down, Down{Name: n.Name, State: n.State})
		}
		if n.Name == in.Node {
			found, v.NodeOnline = true, n.Online
		}
	}
	if !found {
		return v, fmt.Errorf("node %s is not a node of service %s", in.Node, in.Service)
	}
	min := in.MinAvailable
	v.MinAvailable = min
	switch {
	case !v.NodeOnline:
		v.Yes = true
		v.Reason = fmt.Sprintf("%s is already down (not counted online): online %d, minAvailable %d", in.Node, v.Online, min)
	case rollout.MayStop(v.Online, min):
		v.Yes = true
		v.Reason = fmt.Sprintf("online %d, minAvailable %d: stopping %s leaves %d ≥ %d", v.Online, min, in.Node, v.Online-1, min)
	default:
		v.Reason = fmt.Sprintf("online %d, minAvailable %d: stopping %s would leave %d < %d", v.Online, min, in.Node, v.Online-1, min)
	}
	if d := v.OthersDown(); d != "" {
		v.Reason += "; already down: " + d
	}
	for _, n := range in.Nodes {
		if n.Name == in.Node && v.NodeOnline && strings.HasPrefix(n.Message, nodestate.HoldPrefix) {
			// The node's own check (or the alert gate) said not now when it last asked.
			v.Yes = false
			v.Reason += "; but the node " + n.Message
		}
	}
	return v, nil
}

// OthersDown names the other nodes already down with their states ("node-5 (Unreachable),
// ..."), at most maxListed of them.
func (v Verdict) OthersDown() string {
	var parts []string
	n := 0
	for _, d := range v.Down {
		if d.Name == v.Node {
			continue
		}
		if n == maxListed {
			parts = append(parts, fmt.Sprintf("and %d more", len(v.Down)-n-boolInt(!v.NodeOnline)))
			break
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", d.Name, d.State))
		n++
	}
	return strings.Join(parts, ", ")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
