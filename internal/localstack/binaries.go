package localstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Names of rollkeeper's binaries.
const (
	ManagerBinary = "rollkeeper-manager"
	AgentBinary   = "rollkeeper-agent"
	FixtureBinary = "rollkeeper-fixture"
	// PluginBinary is the kubectl plugin (kubectl rollkeeper).
	PluginBinary = "kubectl-rollkeeper"
)

// binaryPackages maps each binary to its main package.
var binaryPackages = map[string]string{
	ManagerBinary: "./cmd/manager",
	AgentBinary:   "./cmd/agent",
	FixtureBinary: "./cmd/fixture",
	PluginBinary:  "./cmd/kubectl-rollkeeper",
}

// BinDirEnv names a directory of prebuilt binaries (make test sets it to bin/ after make
// build). A binary missing there is built as usual.
const BinDirEnv = "ROLLKEEPER_BIN_DIR"

// Binaries are the paths of rollkeeper's binaries.
type Binaries struct {
	Manager string
	Agent   string
	Fixture string
}

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// Build returns the paths of the named binaries (ManagerBinary, AgentBinary, FixtureBinary),
// taking them from $ROLLKEEPER_BIN_DIR when present there, else building them once per
// process, statically (CGO_ENABLED=0), into a temporary directory that CleanupBinaries removes.
func Build(ctx context.Context, names ...string) (map[string]string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()

	out := map[string]string{}
	var missing []string
	for _, n := range names {
		if _, ok := binaryPackages[n]; !ok {
			return nil, fmt.Errorf("build: unknown binary %q", n)
		}
		if p, ok := built[n]; ok {
			out[n] = p
			continue
		}
		if d := os.Getenv(BinDirEnv); d != "" {
			p := filepath.Join(d, n)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				built[n], out[n] = p, p
				continue
			}
		}
		missing = append(missing, n)
	}
	if len(missing) == 0 {
		return out, nil
	}

	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "rollkeeper-bin-")
		if err != nil {
			return nil, fmt.Errorf("build: temp dir: %w", err)
		}
		buildDir = d
	}
	// One go build for every missing binary: with several main packages and -o naming a
	// directory, each lands as <dir>/<last path element>.
	tmp, err := os.MkdirTemp(buildDir, "build-")
	if err != nil {
		return nil, fmt.Errorf("build: temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-o", tmp + string(os.PathSeparator)}
	for _, n := range missing {
		args = append(args, binaryPackages[n])
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: go %s: %w\n%s", strings.Join(missing, ", "), strings.Join(args, " "), err, b)
	}
	for _, n := range missing {
		src := filepath.Join(tmp, filepath.Base(binaryPackages[n]))
		dst := filepath.Join(buildDir, n)
		if err := os.Rename(src, dst); err != nil {
			return nil, fmt.Errorf("build %s: %w", n, err)
		}
		built[n], out[n] = dst, dst
	}
	return out, nil
}

// CleanupBinaries removes the binaries Build made in this process (prebuilt ones stay).
func CleanupBinaries() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
		buildDir = ""
		built = map[string]string{}
	}
}
