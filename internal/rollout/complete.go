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
// every online node on target, none unreadable, none upgrading. Unreachable nodes do not block
// it (they start the most popular version when they come back). current are the registrations
// that count (well-formed, of selected nodes), unreadable those held by a live session that
// cannot be read, staged the staging children agents made (see CurrentOf).
func Complete(target string, current []zklayout.Current, unreadable int, staged []zklayout.Staged, need int) bool {
	if unreadable > 0 || len(current) < need {
		return false
	}
	for _, c := range current {
		if c.Version != target {
			return false
		}
	}
	for _, s := range staged {
		if s.State == zklayout.StagedUpgrading {
			return false
		}
	}
	return true
}
