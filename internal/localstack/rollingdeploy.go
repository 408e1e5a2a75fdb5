package localstack

import (
	"context"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rkv1alpha1 "github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// FixtureArtifact returns the fixture artifact of svc at version, packing and serving it on
// first use as <svc>-<version>.tar.gz (or <svc>-<version>-unhealthy.tar.gz).
func (s *Stack) FixtureArtifact(svc, version string, unhealthy bool) (Artifact, error) {
	name := svc + "-" + version
	if unhealthy {
		name += "-unhealthy"
	}
	name += ".tar.gz"
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.artifacts[name]; ok {
		return a, nil
	}
	data, err := FixtureTarGz(s.Bins.Fixture, version, unhealthy)
	if err != nil {
		return Artifact{}, err
	}
	a, err := s.Artifacts.Put(name, data)
	if err != nil {
		return Artifact{}, err
	}
	s.artifacts[name] = a
	return a, nil
}

// ServiceOption adjusts a fixture service built by FixtureService.
type ServiceOption func(*serviceOptions)

type serviceOptions struct {
	unhealthy bool
	fileURL   bool
	sha256    string
	mutate    []func(*rkv1alpha1.ServiceSpec)
}

// Unhealthy packs the version with an UNHEALTHY file: its health check fails.
func Unhealthy() ServiceOption { return func(o *serviceOptions) { o.unhealthy = true } }

// FileURL points the artifact at its file:// address instead of http://.
func FileURL() ServiceOption { return func(o *serviceOptions) { o.fileURL = true } }

// SHA256 overrides the artifact digest (for a wrong-checksum test).
func SHA256(sum string) ServiceOption { return func(o *serviceOptions) { o.sha256 = sum } }

// DependsOn sets the services this one waits for.
func DependsOn(svcs ...string) ServiceOption {
	return Mutate(func(sp *rkv1alpha1.ServiceSpec) { sp.DependsOn = svcs })
}

// MinAvailable sets the quorum to n nodes.
func MinAvailable(n int) ServiceOption {
	return Mutate(func(sp *rkv1alpha1.ServiceSpec) { sp.Quorum.MinAvailable = intstr.FromInt32(int32(n)) })
}

// MinAvailablePercent sets the quorum to a percentage ("60%").
func MinAvailablePercent(p string) ServiceOption {
	return Mutate(func(sp *rkv1alpha1.ServiceSpec) { sp.Quorum.MinAvailable = intstr.FromString(p) })
}

// NodeSelector restricts the service to nodes carrying every given label.
func NodeSelector(labels map[string]string) ServiceOption {
	return Mutate(func(sp *rkv1alpha1.ServiceSpec) { sp.NodeSelector = &metav1.LabelSelector{MatchLabels: labels} })
}

// Mutate applies any change to the built spec.
func Mutate(f func(*rkv1alpha1.ServiceSpec)) ServiceOption {
	return func(o *serviceOptions) { o.mutate = append(o.mutate, f) }
}

// FixtureService builds the spec of service svc running the fixture at version: the artifact
// served by the stack (tar.gz), run as
//
//	$(ROLLKEEPER_ARTIFACT_DIR)/rollkeeper-fixture --listen=$(ROLLKEEPER_NODE_ADDRESS):<port>
//
// with an HTTP health check on /healthz, quorum minAvailable 1 unless an option says
// otherwise. The same shape as config/samples.
func (s *Stack) FixtureService(svc, version string, opts ...ServiceOption) (rkv1alpha1.ServiceSpec, error) {
	var o serviceOptions
	for _, f := range opts {
		f(&o)
	}
	a, err := s.FixtureArtifact(svc, version, o.unhealthy)
	if err != nil {
		return rkv1alpha1.ServiceSpec{}, err
	}
	port, err := s.ServicePort(svc)
	if err != nil {
		return rkv1alpha1.ServiceSpec{}, err
	}
	url := a.URL
	if o.fileURL {
		url = a.FileURL
	}
	sum := a.SHA256
	if o.sha256 != "" {
		sum = o.sha256
	}
	sp := FixtureServiceSpec(svc, version, url, sum, port)
	for _, f := range o.mutate {
		f(&sp)
	}
	return sp, nil
}

// FixtureServiceSpec is the service spec that runs a fixture artifact (see FixtureService).
func FixtureServiceSpec(svc, version, url, sha256 string, port int) rkv1alpha1.ServiceSpec {
	return rkv1alpha1.ServiceSpec{
		Name:    svc,
		Version: version,
		Artifact: rkv1alpha1.ArtifactSpec{
			URL:    url,
			SHA256: sha256,
			Unpack: rkv1alpha1.UnpackTarGz,
		},
		Quorum: rkv1alpha1.QuorumSpec{MinAvailable: intstr.FromInt32(1)},
		Run: rkv1alpha1.RunSpec{
			Command:                []string{"$(ROLLKEEPER_ARTIFACT_DIR)/" + FixtureBinary},
			Args:                   []string{"--listen=$(ROLLKEEPER_NODE_ADDRESS):" + strconv.Itoa(port)},
			StopGracePeriodSeconds: 5,
		},
		HealthCheck: &rkv1alpha1.HealthCheckSpec{
			HTTPGet:          &rkv1alpha1.HTTPGetCheck{Path: "/healthz", Port: int32(port), Scheme: "HTTP"},
			TimeoutSeconds:   1,
			PeriodSeconds:    1,
			SuccessThreshold: 1,
			FailureThreshold: 3,
		},
	}
}

// NewRollingDeploy is a RollingDeploy called name with the given services.
func NewRollingDeploy(name string, services ...rkv1alpha1.ServiceSpec) *rkv1alpha1.RollingDeploy {
	rd := &rkv1alpha1.RollingDeploy{Spec: rkv1alpha1.RollingDeploySpec{Services: services}}
	rd.Name = name
	return rd
}

// GetRD reads the RollingDeploy called name.
func (s *Stack) GetRD(ctx context.Context, name string) (*rkv1alpha1.RollingDeploy, error) {
	rd := &rkv1alpha1.RollingDeploy{}
	if err := s.Client.Get(ctx, client.ObjectKey{Name: name}, rd); err != nil {
		return nil, fmt.Errorf("get RollingDeploy %s: %w", name, err)
	}
	return rd, nil
}

// UpdateRD applies change to the latest RollingDeploy called name, retrying on conflicts.
func (s *Stack) UpdateRD(ctx context.Context, name string, change func(*rkv1alpha1.RollingDeploy)) error {
	return WaitFor(ctx, 30*time.Second, "update of RollingDeploy "+name, func(ctx context.Context) (bool, error) {
		rd, err := s.GetRD(ctx, name)
		if err != nil {
			return false, err
		}
		change(rd)
		err = s.Client.Update(ctx, rd)
		if apierrors.IsConflict(err) {
			return false, err
		}
		if err != nil {
			return false, Permanent(fmt.Errorf("update RollingDeploy %s: %w", name, err))
		}
		return true, nil
	})
}

// WaitForRD polls the RollingDeploy called name until cond holds and returns it. what names
// the awaited state; the error shows the last status seen.
func (s *Stack) WaitForRD(ctx context.Context, name string, timeout time.Duration, what string, cond func(*rkv1alpha1.RollingDeploy) bool) (*rkv1alpha1.RollingDeploy, error) {
	var last *rkv1alpha1.RollingDeploy
	err := WaitFor(ctx, timeout, "RollingDeploy "+name+" "+what, func(ctx context.Context) (bool, error) {
		rd, err := s.GetRD(ctx, name)
		if err != nil {
			return false, err
		}
		last = rd
		return cond(rd), nil
	})
	if err != nil {
		return last, fmt.Errorf("%w\nlast status: %s", err, DescribeStatus(last))
	}
	return last, nil
}

// Observed reports whether the status describes the current generation.
func Observed(rd *rkv1alpha1.RollingDeploy) bool {
	return rd.Status.ObservedGeneration == rd.Generation
}

// WaitForCondition waits until the RollingDeploy's status describes its current generation
// and has condition condType with status (and reason, when not empty).
func (s *Stack) WaitForCondition(ctx context.Context, name, condType string, status metav1.ConditionStatus, reason string, timeout time.Duration) (*rkv1alpha1.RollingDeploy, error) {
	what := fmt.Sprintf("condition %s=%s", condType, status)
	if reason != "" {
		what += " (" + reason + ")"
	}
	return s.WaitForRD(ctx, name, timeout, what, func(rd *rkv1alpha1.RollingDeploy) bool {
		c := meta.FindStatusCondition(rd.Status.Conditions, condType)
		return Observed(rd) && c != nil && c.Status == status && (reason == "" || c.Reason == reason)
	})
}

// WaitForReady waits until the RollingDeploy is Ready=True for its current generation.
func (s *Stack) WaitForReady(ctx context.Context, name string, timeout time.Duration) (*rkv1alpha1.RollingDeploy, error) {
	return s.WaitForCondition(ctx, name, rkv1alpha1.ConditionReady, metav1.ConditionTrue, "", timeout)
}

// ServiceStatus returns the status of service svc, or nil.
func ServiceStatus(rd *rkv1alpha1.RollingDeploy, svc string) *rkv1alpha1.ServiceStatus {
	for i := range rd.Status.Services {
		if rd.Status.Services[i].Name == svc {
			return &rd.Status.Services[i]
		}
	}
	return nil
}

// DescribeStatus renders a RollingDeploy's status on a few lines, for errors and logs.
func DescribeStatus(rd *rkv1alpha1.RollingDeploy) string {
	if rd == nil {
		return "(none)"
	}
	st := rd.Status
	out := fmt.Sprintf("generation=%d observed=%d phase=%s progress=%s", rd.Generation, st.ObservedGeneration, st.Phase, st.Progress)
	for _, c := range st.Conditions {
		out += fmt.Sprintf("\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, sv := range st.Services {
		out += fmt.Sprintf("\n  service %s #%d %s target=%s total=%d online=%d updated=%d staged=%d upgrading=%d failed=%d unreachable=%d",
			sv.Name, sv.Position, sv.Phase, sv.TargetVersion, sv.Total, sv.Online, sv.Updated, sv.Staged, sv.Upgrading, sv.Failed, sv.Unreachable)
		if sv.Message != "" {
			out += ": " + sv.Message
		}
	}
	return out
}
