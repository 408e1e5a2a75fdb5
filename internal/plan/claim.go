package plan

import (
	"fmt"
	"time"
)

// Claimant is a RollingDeploy that names a service.
type Claimant struct {
	Name    string
	UID     string
	Created time.Time
}

// Before orders claimants by creation time, then name: the earlier one goes first.
func (c Claimant) Before(o Claimant) bool {
	if !c.Created.Equal(o.Created) {
		return c.Created.Before(o.Created)
	}
	return c.Name < o.Name
}

// Decision says whether a RollingDeploy may write a service's plan.
type Decision struct {
	Granted bool
	// Blocker is the RollingDeploy to wait for when not granted.
	Blocker Claimant
	// Message explains a refusal to a person.
	Message string
}

// Claim decides whether self may own service svc, so that two RollingDeploys never roll the same
// service at once and the decision is stable (no flip-flopping between them):
//   - holder is the existing RollingDeploy whose plan is in staging/<svc> (nil: no plan, or its
//     RollingDeploy is gone) and holderDone says whether its rollout of svc is complete;
//   - rivals are the other existing, valid RollingDeploys that name svc and are not being deleted.
//
// The holder keeps the service until its rollout is complete. Then, or when nobody holds it, the
// earliest claimant (by creation time, then name) gets it, counting only claimants created after
// a complete holder: an older RollingDeploy never takes a service back from a newer one.
func Claim(svc string, self Claimant, holder *Claimant, holderDone bool, rivals []Claimant) Decision {
	if holder != nil && holder.UID == self.UID {
		return Decision{Granted: true}
	}
	if holder != nil && !holderDone {
		return Decision{Blocker: *holder, Message: fmt.Sprintf(
			"service %q is being rolled out by RollingDeploy %q; this one waits until that rollout of %q is complete or %q is deleted",
			svc, holder.Name, svc, holder.Name)}
	}
	if holder != nil && self.Before(*holder) {
		return Decision{Blocker: *holder, Message: fmt.Sprintf(
			"service %q was taken over by RollingDeploy %q, which is newer than this one; delete %q to hand %q back",
			svc, holder.Name, holder.Name, svc)}
	}
	first := self
	for _, r := range rivals {
		if r.UID == self.UID || holder != nil && (r.UID == holder.UID || r.Before(*holder)) {
			continue
		}
		if r.Before(first) {
			first = r
		}
	}
	if first.UID == self.UID {
		return Decision{Granted: true}
	}
	return Decision{Blocker: first, Message: fmt.Sprintf(
		"service %q is also named by RollingDeploy %q, which is older and goes first; this one waits until that rollout of %q is complete or %q is deleted",
		svc, first.Name, svc, first.Name)}
}
