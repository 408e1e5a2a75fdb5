package rollout

import "github.com/rollkeeper/rollkeeper/internal/zklayout"

// NeedOnline is how many nodes must be online on the target before a service counts as
// complete: its quorum, and at least one when any node is selected, so a service whose nodes
// have not registered yet is never reported done.
func NeedOnline(minAvailable, selected int) int {
	if selected == 0 {
		return 0
	}
	return max(1, minAvailable)
}

// Complete reports whether a service's rollout to target is done: at least need nodes online,
// every online node on target (or among failed: a tolerated failure, which keeps its
// version), none unreadable, nobody queued. Unreachable nodes do not block
// it (they start the most popular version when they come back). current are the registrations
// that count (well-formed, of selected nodes: CurrentOf), unreadable those held by a live
// session that cannot be read, queued the staging children agents made that are still there
// (Queued): a node queued or upgrading, or a dead one's until its session expires.
func Complete(target string, current []zklayout.Current, unreadable, queued, need int, failed map[string]bool) bool {
	if unreadable > 0 || queued > 0 || len(current) < need {
		return false
	}
	for _, c := range current {
		if c.Version != target && !failed[c.Node] {
			return false
		}
	}
	return true
}

// Done applies Complete to a snapshot read whole (registrations and queue): is the rollout of
// plan's service to target done? need as for Complete (NeedOnline).
func Done(s *Snapshot, target string, plan *zklayout.Plan, need int) bool {
	current, unreadable := CurrentOf(s.Current, plan)
	var failed map[string]bool
	if target == plan.Version {
		failed = Failed(plan, s.Failures)
	}
	return Complete(target, current, unreadable, Queued(s.Queue), need, failed)
}

// Queued counts the staging children agents made (ephemeral) that are still there, readable or
// not. A persistent child was made by hand: it holds nothing back.
func Queued(queue []QueueEntry) int {
	n := 0
	for _, q := range queue {
		if q.Loaded && !q.Gone && q.Owner != 0 {
			n++
		}
	}
	return n
}
