// Package harness is the test-side face of internal/localstack, which brings up rollkeeper's
// real stack on one machine (a real ZooKeeper, a real kube-apiserver and etcd, the operator and
// node agents as separate processes, fixture artifacts, an independent ZooKeeper Recorder;
// nothing is mocked). The e2e tests (test/e2e) and the other suites under test/ use it.
//
// Every type, constant and function of localstack is available here under the same name (the
// types are aliases, so values pass freely between the two packages). What this package adds
// needs the testing package, which localstack must not link (cmd/demo uses it): StartT, which
// fails the test on error and stops the stack on cleanup, and Main, for TestMain.
package harness

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/localstack"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// StartT is Start for a test: it fails the test on error, and on cleanup dumps every log when
// the test failed, then stops the stack.
func StartT(t testing.TB, ctx context.Context, cfg Config) *Stack {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start test stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			s.DumpLogs(&b, 64<<10)
			t.Log(b.String())
		}
		s.Stop()
	})
	return s
}

// Main runs a test binary's tests and then removes what the harness left behind in the
// process (the temporary binary directory). Use it from TestMain: os.Exit(harness.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	localstack.CleanupBinaries()
	return code
}

// What follows forwards localstack's exported API unchanged.

type (
	Artifact            = localstack.Artifact
	ArtifactServer      = localstack.ArtifactServer
	Binaries            = localstack.Binaries
	Config              = localstack.Config
	ControlPlane        = localstack.ControlPlane
	ControlPlaneOptions = localstack.ControlPlaneOptions
	HostProcess         = localstack.HostProcess
	Node                = localstack.Node
	Process             = localstack.Process
	Recorder            = localstack.Recorder
	Samples             = localstack.Samples
	ServiceOption       = localstack.ServiceOption
	Snapshot            = localstack.Snapshot
	Stack               = localstack.Stack
	VersionChange       = localstack.VersionChange
)

const (
	AgentBinary       = localstack.AgentBinary
	BinDirEnv         = localstack.BinDirEnv
	CRDDirEnv         = localstack.CRDDirEnv
	DefaultStopGrace  = localstack.DefaultStopGrace
	FixtureBinary     = localstack.FixtureBinary
	KeepDirEnv        = localstack.KeepDirEnv
	KindCurrent       = localstack.KindCurrent
	KindStaging       = localstack.KindStaging
	ManagerBinary     = localstack.ManagerBinary
	MetricsReaderRole = localstack.MetricsReaderRole
	PluginBinary      = localstack.PluginBinary
	PollInterval      = localstack.PollInterval
)

// ApplyMetricsReaderRole is localstack.ApplyMetricsReaderRole.
func ApplyMetricsReaderRole(ctx context.Context, c client.Client) error {
	return localstack.ApplyMetricsReaderRole(ctx, c)
}

// AssetsDir is localstack.AssetsDir.
func AssetsDir() (string, error) {
	return localstack.AssetsDir()
}

// Build is localstack.Build.
func Build(ctx context.Context, names ...string) (map[string]string, error) {
	return localstack.Build(ctx, names...)
}

// CleanupBinaries is localstack.CleanupBinaries.
func CleanupBinaries() {
	localstack.CleanupBinaries()
}

// DependsOn is localstack.DependsOn.
func DependsOn(svcs ...string) ServiceOption {
	return localstack.DependsOn(svcs...)
}

// DescribeStatus is localstack.DescribeStatus.
func DescribeStatus(rd *rkv1alpha1.RollingDeploy) string {
	return localstack.DescribeStatus(rd)
}

// FileURL is localstack.FileURL.
func FileURL() ServiceOption {
	return localstack.FileURL()
}

// FixtureServiceSpec is localstack.FixtureServiceSpec.
func FixtureServiceSpec(svc, version, url, sha256 string, port int) rkv1alpha1.ServiceSpec {
	return localstack.FixtureServiceSpec(svc, version, url, sha256, port)
}

// FixtureTarGz is localstack.FixtureTarGz.
func FixtureTarGz(fixtureBin, version string, unhealthy bool) ([]byte, error) {
	return localstack.FixtureTarGz(fixtureBin, version, unhealthy)
}

// FormatMembers is localstack.FormatMembers.
func FormatMembers(m map[string]string) string {
	return localstack.FormatMembers(m)
}

// GetMetrics is localstack.GetMetrics.
func GetMetrics(ctx context.Context, addr, token string) (int, []byte, error) {
	return localstack.GetMetrics(ctx, addr, token)
}

// KillUnder is localstack.KillUnder.
func KillUnder(dir string) []int {
	return localstack.KillUnder(dir)
}

// MetricsReaderToken is localstack.MetricsReaderToken.
func MetricsReaderToken(ctx context.Context, c client.Client) (string, error) {
	return localstack.MetricsReaderToken(ctx, c)
}

// MinAvailable is localstack.MinAvailable.
func MinAvailable(n int) ServiceOption {
	return localstack.MinAvailable(n)
}

// MinAvailablePercent is localstack.MinAvailablePercent.
func MinAvailablePercent(p string) ServiceOption {
	return localstack.MinAvailablePercent(p)
}

// Mutate is localstack.Mutate.
func Mutate(f func(*rkv1alpha1.ServiceSpec)) ServiceOption {
	return localstack.Mutate(f)
}

// NewArtifactServer is localstack.NewArtifactServer.
func NewArtifactServer(dir string) (*ArtifactServer, error) {
	return localstack.NewArtifactServer(dir)
}

// NewRecorder is localstack.NewRecorder.
func NewRecorder(ctx context.Context, servers string, layout zklayout.Layout, services ...string) (*Recorder, error) {
	return localstack.NewRecorder(ctx, servers, layout, services...)
}

// NewRollingDeploy is localstack.NewRollingDeploy.
func NewRollingDeploy(name string, services ...rkv1alpha1.ServiceSpec) *rkv1alpha1.RollingDeploy {
	return localstack.NewRollingDeploy(name, services...)
}

// NodeAddress is localstack.NodeAddress.
func NodeAddress(i int) string {
	return localstack.NodeAddress(i)
}

// NodeName is localstack.NodeName.
func NodeName(i int) string {
	return localstack.NodeName(i)
}

// NodeObject is localstack.NodeObject.
func NodeObject(name, address string, labels map[string]string) *corev1.Node {
	return localstack.NodeObject(name, address, labels)
}

// NodeSelector is localstack.NodeSelector.
func NodeSelector(labels map[string]string) ServiceOption {
	return localstack.NodeSelector(labels)
}

// Observed is localstack.Observed.
func Observed(rd *rkv1alpha1.RollingDeploy) bool {
	return localstack.Observed(rd)
}

// Permanent is localstack.Permanent.
func Permanent(err error) error {
	return localstack.Permanent(err)
}

// ProcessesUnder is localstack.ProcessesUnder.
func ProcessesUnder(dir string) []HostProcess {
	return localstack.ProcessesUnder(dir)
}

// RepoRoot is localstack.RepoRoot.
func RepoRoot() (string, error) {
	return localstack.RepoRoot()
}

// SHA256 is localstack.SHA256.
func SHA256(sum string) ServiceOption {
	return localstack.SHA256(sum)
}

// Scheme is localstack.Scheme.
func Scheme() (*runtime.Scheme, error) {
	return localstack.Scheme()
}

// Scrape is localstack.Scrape.
func Scrape(ctx context.Context, addr string) (Samples, error) {
	return localstack.Scrape(ctx, addr)
}

// ScrapeAs is localstack.ScrapeAs.
func ScrapeAs(ctx context.Context, addr, token string) (Samples, error) {
	return localstack.ScrapeAs(ctx, addr, token)
}

// ServiceAccountToken is localstack.ServiceAccountToken.
func ServiceAccountToken(ctx context.Context, c client.Client, namespace, name, clusterRole string) (string, error) {
	return localstack.ServiceAccountToken(ctx, c, namespace, name, clusterRole)
}

// ServiceStatus is localstack.ServiceStatus.
func ServiceStatus(rd *rkv1alpha1.RollingDeploy, svc string) *rkv1alpha1.ServiceStatus {
	return localstack.ServiceStatus(rd, svc)
}

// Start is localstack.Start.
func Start(ctx context.Context, cfg Config) (s *Stack, err error) {
	return localstack.Start(ctx, cfg)
}

// StartControlPlane is localstack.StartControlPlane.
func StartControlPlane(dir string) (*ControlPlane, error) {
	return localstack.StartControlPlane(dir)
}

// StartControlPlaneWith is localstack.StartControlPlaneWith.
func StartControlPlaneWith(dir string, opts ControlPlaneOptions) (*ControlPlane, error) {
	return localstack.StartControlPlaneWith(dir, opts)
}

// Unhealthy is localstack.Unhealthy.
func Unhealthy() ServiceOption {
	return localstack.Unhealthy()
}

// WaitFor is localstack.WaitFor.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) error {
	return localstack.WaitFor(ctx, timeout, what, cond)
}

// WaitScrape is localstack.WaitScrape.
func WaitScrape(ctx context.Context, addr string, timeout time.Duration, what string, check func(Samples) string) (Samples, error) {
	return localstack.WaitScrape(ctx, addr, timeout, what, check)
}

// WaitScrapeAs is localstack.WaitScrapeAs.
func WaitScrapeAs(ctx context.Context, addr, token string, timeout time.Duration, what string, check func(Samples) string) (Samples, error) {
	return localstack.WaitScrapeAs(ctx, addr, token, timeout, what, check)
}

// WriteSigningKey is localstack.WriteSigningKey.
func WriteSigningKey(dir, name string) (keyFile, pubFile string, err error) {
	return localstack.WriteSigningKey(dir, name)
}
