// Package hostenv builds the environment of the programs the agent runs on the host: host
// services (the exec backend) and exec health checks.
package hostenv

import "os"

// DefaultPath is the PATH of host programs when the agent itself has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Build returns the environment of a host program: the agent's PATH (DefaultPath if unset),
// then env, the run's variables (ROLLKEEPER_VERSION, ROLLKEEPER_SERVICE... and the release's
// env), and nothing else. It is an allowlist, not the agent's environment minus a denylist,
// because the agent's environment holds its secrets and configuration (ROLLKEEPER_ZK_AUTH,
// every ROLLKEEPER_<FLAG>, a pod's service account and proxy settings): a host service is
// another program, possibly running as another user, and a variable added to the agent later
// must not reach it. A later entry wins over an earlier one (os/exec keeps the last), so a
// release may set its own PATH.
func Build(env ...string) []string {
	path, ok := os.LookupEnv("PATH")
	if !ok || path == "" {
		path = DefaultPath
	}
	return append([]string{"PATH=" + path}, env...)
}
