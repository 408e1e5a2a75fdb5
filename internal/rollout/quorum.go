// Package rollout holds the protocol's pure rules, shared by the agent, the operator and the
// kubectl plugin: may a node stop under the quorum rule, where does it stand in the staging
// queue, which version is most popular, is a service's rollout complete. No clients, no I/O.
package rollout

import (
	"fmt"
	"sort"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// MayStop reports whether one more node may stop: online counts the service's registered
// (online) nodes including the caller, so the caller leaving leaves online-1.
func MayStop(online, minAvailable int) bool {
	return online-1 >= minAvailable
}

// MaxAdmit caps a decision's batch: the transaction that admits it holds two operations per
// node (about 400 bytes), and ZooKeeper bounds a request's size (jute.maxbuffer, 1 MiB by
// default). 512 lets a 90% quorum take 10% of 5,000 nodes in one decision.
const MaxAdmit = 512

// Admitted is one node of a decision's batch: its staging child, at the data version read.
type Admitted struct {
	Node         string
	Child        string
	ChildVersion int32
	// Domain is the node's failure domain (from its staging child), kept in its mark.
	Domain string
}

// Admissible returns how many nodes of batch (the decider first) may stop together: the
// longest prefix whose departure leaves at least minAvailable answered nodes outside it.
// answered holds the registered nodes other than the decider that answered the decision's roll
// call. 0: not even the decider may stop. With a batch of one this is MayStop over the answers.
func Admissible(batch []Admitted, answered map[string]bool, minAvailable int) int {
	remaining := len(answered)
	if remaining < minAvailable {
		return 0
	}
	k := 1
	for ; k < len(batch); k++ {
		if answered[batch[k].Node] {
			if remaining-1 < minAvailable {
				break
			}
			remaining--
		}
	}
	return k
}

// Predecessor returns the child just ahead of child in the ordered staging queue ("" when child
// heads it) and whether child is in the queue at all. Like ZooKeeper's lock recipe, a waiter
// watches only its predecessor, so one queue change wakes one agent.
func Predecessor(ordered []string, child string) (pred string, found bool) {
	for i, c := range ordered {
		if c == child {
			if i > 0 {
				return ordered[i-1], true
			}
			return "", true
		}
	}
	return "", false
}

// MostPopular returns the version run by the most nodes; ties go to preferred if it is among the
// tied, otherwise to the highest version string (deterministic). ok is false for no versions.
func MostPopular(versions []string, preferred string) (string, bool) {
	if len(versions) == 0 {
		return preferred, preferred != ""
	}
	count := map[string]int{}
	for _, v := range versions {
		count[v]++
	}
	best := 0
	for _, n := range count {
		if n > best {
			best = n
		}
	}
	var tied []string
	for v, n := range count {
		if n == best {
			tied = append(tied, v)
		}
	}
	if len(tied) == 1 {
		return tied[0], true
	}
	for _, v := range tied {
		if v == preferred {
			return v, true
		}
	}
	sort.Strings(tied)
	return tied[len(tied)-1], true
}

// Mark is one node's part of a decision's transaction: set its staging child (at the data
// version read) to Data, its upgrading mark, and delete its registration.
type Mark struct {
	Admitted
	Data []byte
}

// Marks builds the upgrading marks of a decision taken by decider (admit[0], the decider
// itself) at version in roll call round: the others name the decider in AdmittedBy. The agent
// and the simulation write the same marks.
func Marks(decider, version string, admit []Admitted, round int32, now time.Time) ([]Mark, error) {
	out := make([]Mark, 0, len(admit))
	for i, a := range admit {
		mark := &zklayout.Staged{Node: a.Node, Version: version, State: zklayout.StagedUpgrading, Since: now, RollCall: round, Domain: a.Domain}
		if i > 0 {
			mark.AdmittedBy = decider
		}
		data, err := zklayout.Encode(mark)
		if err != nil {
			return nil, fmt.Errorf("upgrading mark of %s: %w", a.Node, err)
		}
		out = append(out, Mark{Admitted: a, Data: data})
	}
	return out, nil
}
