// Package backend runs a node's host services. Backend is the seam between the rollout state
// machine and the host: Exec supervises child processes; Systemd drives the host's units over
// D-Bus (they outlive the agent); Memory lets many agents share one process in scale tests.
package backend

import (
	"context"
	"errors"
	"time"
)

// Spec is everything needed to start one version of a service.
type Spec struct {
	Version string
	// Dir is the stable path of the version's files (the store's current link).
	Dir     string
	Command []string
	Args    []string
	// Env is KEY=VALUE pairs added to the service's environment.
	Env []string
	// StopGrace is the wait between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// RunAsUser and RunAsGroup are the numeric user and group the service runs as; unset, it
	// runs as the agent. They are set together (a group alone would leave the agent's user,
	// a user alone would leave the agent's group): see ValidateCredentials.
	RunAsUser  *uint32 `json:",omitempty"`
	RunAsGroup *uint32 `json:",omitempty"`
}

// ValidateCredentials refuses a spec with only one of RunAsUser and RunAsGroup.
func (s Spec) ValidateCredentials() error {
	if (s.RunAsUser == nil) != (s.RunAsGroup == nil) {
		return errors.New("runAsUser and runAsGroup must be set together")
	}
	return nil
}

// Status is what the backend knows of a service.
type Status struct {
	Running  bool
	Version  string
	PID      int
	Restarts int
	// LastExit describes the last unexpected exit, if any.
	LastExit string
}

// Backend starts, stops and reports host services.
type Backend interface {
	// Start launches svc per spec. It fails if svc is already running.
	Start(ctx context.Context, svc string, spec Spec) error
	// Stop stops svc (gracefully, then forcibly) and waits until it is gone. Stopping a
	// stopped service is not an error.
	Stop(ctx context.Context, svc string) error
	// Status reports svc's state.
	Status(svc string) Status
}
