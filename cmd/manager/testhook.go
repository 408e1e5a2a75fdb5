package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/controllers"
)

// Test hook: with ROLLKEEPER_TEST_HOOK_STOP_AT=<step>[@<version>] the operator, on reaching that
// step of publication (controllers.Steps) for that target version (any when omitted), says so
// on stderr and in the file ROLLKEEPER_TEST_HOOK_FILE (if set), then blocks that pass for good,
// so a test can kill it exactly there. Never set in production; the chart does not know it.
const (
	TestHookStopAtEnv = "ROLLKEEPER_TEST_HOOK_STOP_AT"
	TestHookFileEnv   = "ROLLKEEPER_TEST_HOOK_FILE"
	// TestHookLine starts the line written when the hook is reached.
	TestHookLine = "ROLLKEEPER_TEST_HOOK reached"
)

// testHook returns the publish hook the environment asks for, or nil.
func testHook(log logr.Logger, lookup func(string) (string, bool)) (func(step, version string), error) {
	spec, ok := lookup(TestHookStopAtEnv)
	if !ok || spec == "" {
		return nil, nil
	}
	step, version, _ := strings.Cut(spec, "@")
	known := false
	for _, s := range controllers.Steps {
		known = known || s == step
	}
	if !known {
		return nil, fmt.Errorf("%s=%q: the step must be one of %s", TestHookStopAtEnv, spec, strings.Join(controllers.Steps, ", "))
	}
	file, _ := lookup(TestHookFileEnv)
	log.Info("TEST HOOK ARMED: the operator stops for good at a publication step", "step", step, "version", version)
	return func(s, v string) {
		if s != step || (version != "" && v != version) {
			return
		}
		line := fmt.Sprintf("%s %s %s\n", TestHookLine, s, v)
		fmt.Fprint(os.Stderr, line)
		if file != "" {
			if err := os.WriteFile(file, []byte(line), 0o644); err != nil {
				log.Error(err, "write the test hook file", "file", file)
			}
		}
		select {} // the test kills the process here
	}, nil
}
