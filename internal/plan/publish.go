package plan

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

func artifact(a v1alpha1.ArtifactSpec) zklayout.Artifact {
	unpack := string(a.Unpack)
	if unpack == "" {
		unpack = zklayout.UnpackNone
	}
	return zklayout.Artifact{URL: a.URL, SHA256: a.SHA256, Unpack: unpack}
}

// Release is the releases/<svc>/<version> payload for a service spec, created at now.
func Release(s v1alpha1.ServiceSpec, now time.Time) zklayout.Release {
	r := zklayout.Release{
		Service:  s.Name,
		Version:  s.Version,
		Artifact: artifact(s.Artifact),
		Run: zklayout.Run{
			Command:                slices.Clone(s.Run.Command),
			Args:                   slices.Clone(s.Run.Args),
			StopGracePeriodSeconds: int(s.Run.StopGracePeriodSeconds),
			RunAsUser:              clonePtr(s.Run.RunAsUser),
			RunAsGroup:             clonePtr(s.Run.RunAsGroup),
		},
		CreatedAt: now.UTC(),
	}
	for _, e := range s.Run.Env {
		r.Run.Env = append(r.Run.Env, zklayout.EnvVar{Name: e.Name, Value: e.Value})
	}
	if hc := s.HealthCheck; hc != nil {
		h := &zklayout.HealthCheck{
			TimeoutSeconds:   atLeast1(hc.TimeoutSeconds, 1),
			PeriodSeconds:    atLeast1(hc.PeriodSeconds, 1),
			SuccessThreshold: atLeast1(hc.SuccessThreshold, 1),
			FailureThreshold: atLeast1(hc.FailureThreshold, 3),
		}
		switch {
		case hc.HTTPGet != nil:
			path := hc.HTTPGet.Path
			if path == "" {
				path = "/"
			}
			scheme := hc.HTTPGet.Scheme
			if scheme == "" {
				scheme = "HTTP"
			}
			h.HTTPGet = &zklayout.HTTPGet{Host: hc.HTTPGet.Host, Path: path, Port: int(hc.HTTPGet.Port), Scheme: scheme}
		case hc.TCPSocket != nil:
			h.TCPSocket = &zklayout.TCPSocket{Host: hc.TCPSocket.Host, Port: int(hc.TCPSocket.Port)}
		case hc.Exec != nil:
			h.Exec = &zklayout.Exec{Command: slices.Clone(hc.Exec.Command)}
		}
		r.HealthCheck = h
	}
	return r
}

// atLeast1 applies the schema default when the API server did not (objects built in Go).
func atLeast1(v int32, def int) int {
	if v < 1 {
		return def
	}
	return int(v)
}

// ReleaseConflict reports whether an existing release of the same version differs in what
// makes a version immutable: its artifact. The message says what to do about it.
func ReleaseConflict(existing, desired zklayout.Release) error {
	if existing.Artifact == desired.Artifact {
		return nil
	}
	return fmt.Errorf("release %s/%s already exists with artifact %s (sha256 %s, unpack %s), but the spec asks for %s "+
		"(sha256 %s, unpack %s); a version's artifact is immutable: give the new artifact a new version",
		desired.Service, desired.Version, existing.Artifact.URL, existing.Artifact.SHA256, existing.Artifact.Unpack,
		desired.Artifact.URL, desired.Artifact.SHA256, desired.Artifact.Unpack)
}

// Owner identifies the RollingDeploy that writes a plan.
type Owner struct {
	Name       string
	UID        string
	Generation int64
}

// Options are the RollingDeploy-wide inputs of a plan.
type Options struct {
	Paused        bool
	FailurePolicy v1alpha1.FailurePolicy
}

// Plan is the staging/<svc> payload for a service spec: minAvailable is the resolved quorum, g
// the resolved gates beyond it,
// previous the version the service ran before (see PreviousVersion).
func Plan(owner Owner, s v1alpha1.ServiceSpec, opts Options, minAvailable int, minStaged *int, g Gates, previous string, now time.Time) (zklayout.Plan, error) {
	sel, err := SelectorString(s.NodeSelector)
	if err != nil {
		return zklayout.Plan{}, fmt.Errorf("service %q: %w", s.Name, err)
	}
	policy := string(opts.FailurePolicy)
	if policy == "" {
		policy = zklayout.FailurePolicyPause
	}
	deps := slices.Clone(s.DependsOn)
	sort.Strings(deps)
	return zklayout.Plan{
		Deploy:            owner.Name,
		DeployUID:         owner.UID,
		Generation:        owner.Generation,
		Service:           s.Name,
		Version:           s.Version,
		PreviousVersion:   previous,
		MinAvailable:      minAvailable,
		MinStaged:         minStaged,
		Selector:          sel,
		DependsOn:         deps,
		Paused:            opts.Paused,
		FailurePolicy:     policy,
		UpdatedAt:         now.UTC(),
		MaxUnavailable:    g.MaxUnavailable,
		MinHealthySeconds: g.MinHealthySeconds,
		Canary:            g.Canary,
		CanaryBakeSeconds: g.CanaryBakeSeconds,
		Promoted:          g.Promoted,
		MaxFailures:       g.MaxFailures,
		PreStopCheck:      g.PreStopCheck,
		AlertGate:         g.AlertGate,
		Topology:          g.Topology,
		Windows:           g.Windows,
	}, nil
}

// SamePlan reports whether two plans ask the agents for the same thing: everything but the
// generation and the time of writing.
func SamePlan(a, b zklayout.Plan) bool {
	return a.Deploy == b.Deploy && a.DeployUID == b.DeployUID && a.Service == b.Service &&
		a.Version == b.Version && a.PreviousVersion == b.PreviousVersion && a.MinAvailable == b.MinAvailable &&
		a.Selector == b.Selector && slices.Equal(a.DependsOn, b.DependsOn) && a.Paused == b.Paused &&
		a.FailurePolicy == b.FailurePolicy && ptrEqual(a.MinStaged, b.MinStaged) && sameGates(a, b)
}

func ptrEqual(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// PreviousVersion is the version a new plan for target replaces: the old plan's version when
// there was one (its own PreviousVersion when the version did not change); otherwise the most
// popular version among the online nodes other than target (rollout.MostPopular, the agents'
// rule: ties go to the highest version string), or "" when every online node already runs
// target.
func PreviousVersion(old *zklayout.Plan, target string, online []zklayout.Current) string {
	if old != nil {
		if old.Version != target {
			return old.Version
		}
		return old.PreviousVersion
	}
	var versions []string
	for _, c := range online {
		if c.Version != target {
			versions = append(versions, c.Version)
		}
	}
	v, _ := rollout.MostPopular(versions, "")
	return v
}

// clonePtr copies *p: the payload must not share memory with the cached API object.
func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
