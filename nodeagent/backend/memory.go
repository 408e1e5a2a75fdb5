package backend

import (
	"context"
	"fmt"
	"sync"
)

// Memory is a Backend whose services are bookkeeping only: for running many agents in one
// process (scale tests). It records the versions it started.
type Memory struct {
	mu       sync.Mutex
	services map[string]Spec
	running  map[string]bool
}

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory {
	return &Memory{services: map[string]Spec{}, running: map[string]bool{}}
}

// Start implements Backend.
func (m *Memory) Start(_ context.Context, svc string, spec Spec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running[svc] {
		return fmt.Errorf("start %s: already running", svc)
	}
	m.services[svc] = spec
	m.running[svc] = true
	return nil
}

// Stop implements Backend.
func (m *Memory) Stop(_ context.Context, svc string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running[svc] = false
	return nil
}

// Status implements Backend.
func (m *Memory) Status(svc string) Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Status{Running: m.running[svc], Version: m.services[svc].Version}
}
