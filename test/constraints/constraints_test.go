package constraints

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// kind names the payload a constraint lives in.
type kind string

const (
	release  kind = "release"
	planK    kind = "plan"
	deployK  kind = "deployEntry"
	current  kind = "current"
	staged   kind = "staged"
	failure  kind = "failure"
	torrent  kind = "torrent"
	peer     kind = "peer"
	progress kind = "progress"
)

func newPayload(k kind) zklayout.Payload {
	switch k {
	case release:
		return &zklayout.Release{}
	case planK:
		return &zklayout.Plan{}
	case deployK:
		return &zklayout.DeployEntry{}
	case current:
		return &zklayout.Current{}
	case staged:
		return &zklayout.Staged{}
	case failure:
		return &zklayout.Failure{}
	case torrent:
		return &zklayout.Torrent{}
	case peer:
		return &zklayout.Peer{}
	case progress:
		return &zklayout.Progress{}
	}
	panic("unknown payload kind " + string(k))
}

// constraint is one rule both sides enforce. obj is the Kubernetes object that violates it
// (nil when no API object carries the field: payloads only the seeder or an agent writes);
// data is the payload of kind that violates it (nil when no payload can express the violation).
type constraint struct {
	name string
	obj  client.Object
	kind kind
	data []byte
	// operator: the schema cannot express the rule, so the operator's plan.Validate refuses
	// obj (Stalled, nothing written to ZooKeeper) instead of the API server.
	operator bool
}

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// validDeploy is a RollingDeploy that uses every field with a constraint.
func validDeploy() *v1alpha1.RollingDeploy {
	minStaged := intstr.FromInt32(1)
	maxUnavailable, perDomain, maxFailures := intstr.FromString("50%"), intstr.FromInt32(1), intstr.FromInt32(1)
	return &v1alpha1.RollingDeploy{
		ObjectMeta: metav1.ObjectMeta{Name: "shop"},
		Spec: v1alpha1.RollingDeploySpec{
			FailurePolicy: v1alpha1.FailurePolicyRollback,
			Services: []v1alpha1.ServiceSpec{{
				Name:      "web",
				Version:   "v1.2.3+build_7",
				Artifact:  v1alpha1.ArtifactSpec{URL: "https://example.com/web.tar.gz", SHA256: sha, Unpack: v1alpha1.UnpackTarGz},
				DependsOn: []string{"db"},
				Quorum:    v1alpha1.QuorumSpec{MinAvailable: intstr.FromInt32(2)},
				NodeSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"rollkeeper.io/role": "web"},
					MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}},
						{Key: "drained", Operator: metav1.LabelSelectorOpDoesNotExist},
					},
				},
				Run: v1alpha1.RunSpec{
					Command:                []string{"$(ROLLKEEPER_ARTIFACT_DIR)/web"},
					Args:                   []string{"--port", "8080"},
					Env:                    []v1alpha1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}},
					StopGracePeriodSeconds: 30,
					RunAsUser:              id(65534),
					RunAsGroup:             id(65534),
				},
				Distribution: &v1alpha1.DistributionSpec{MinStaged: &minStaged},
				Strategy: &v1alpha1.StrategySpec{
					MaxUnavailable: &maxUnavailable,
					MinHealthyTime: &metav1.Duration{Duration: 30 * time.Second},
					MaxFailures:    &maxFailures,
					Canary:         &v1alpha1.CanarySpec{Nodes: intstr.FromString("10%"), BakeTime: &metav1.Duration{Duration: time.Minute}},
					PreStopCheck:   &v1alpha1.PreStopCheckSpec{Exec: &v1alpha1.ExecCheck{Command: []string{"/bin/ready-to-stop"}}, TimeoutSeconds: 5, PeriodSeconds: 10},
					AlertGate:      &v1alpha1.AlertGateSpec{URL: "http://prometheus:9090", Query: `ALERTS{alertstate="firing"}`, PeriodSeconds: 15},
					Topology:       &v1alpha1.TopologySpec{Key: "topology.kubernetes.io/zone", MaxUnavailablePerDomain: 1, MinAvailablePerDomain: &perDomain},
					MaintenanceWindows: []v1alpha1.MaintenanceWindow{
						{Days: []v1alpha1.Weekday{"Mon", "Tue"}, Start: "02:00", End: "05:00", TimeZone: "Europe/Paris"},
					},
				},
				HealthCheck: &v1alpha1.HealthCheckSpec{
					HTTPGet:          &v1alpha1.HTTPGetCheck{Host: "127.0.0.1", Path: "/healthz", Port: 8080, Scheme: "HTTPS"},
					TimeoutSeconds:   2,
					PeriodSeconds:    5,
					SuccessThreshold: 1,
					FailureThreshold: 3,
				},
			}, {
				Name:     "db",
				Version:  "v9",
				Artifact: v1alpha1.ArtifactSpec{URL: "file:///srv/db", SHA256: sha},
				Quorum:   v1alpha1.QuorumSpec{MinAvailable: intstr.FromString("50%")},
				Run:      v1alpha1.RunSpec{Command: []string{"/usr/bin/db"}},
				HealthCheck: &v1alpha1.HealthCheckSpec{
					Exec:           &v1alpha1.ExecCheck{Command: []string{"/usr/bin/db", "ping"}},
					TimeoutSeconds: 1, PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
				},
			}},
		},
	}
}

// nodes is the node count quorums resolve against.
const nodes = 10

// payloadsOf is what the operator writes for the deploy's first service, built as the
// operator builds it (plan.Release, plan.Plan), then marshalled without validation: the point
// is that Decode refuses it.
func payloadsOf(t *testing.T, rd *v1alpha1.RollingDeploy) map[kind][]byte {
	t.Helper()
	s := rd.Spec.Services[0]
	out := map[kind][]byte{}
	out[release] = raw(t, plan.Release(s, time.Unix(1, 0)))
	q := s.Quorum.MinAvailable
	minAvailable := int(q.IntVal)
	if q.Type == intstr.String {
		var err error
		if minAvailable, err = plan.ResolveQuorum(q, nodes); err != nil {
			t.Fatalf("quorum %s: %v", q.String(), err)
		}
	}
	var minStaged *int
	if d := s.Distribution; d != nil && d.MinStaged != nil {
		v := int(d.MinStaged.IntVal)
		minStaged = &v
	}
	gates, err := plan.ResolveGates(plan.Strategy(rd.Spec, s), []map[string]string{{"zone": "a"}, {"zone": "b"}})
	if err != nil {
		t.Fatalf("gates: %v", err)
	}
	p, err := plan.Plan(plan.Owner{Name: rd.Name, UID: "0b5e6c9c-5b8f-4f6a-9a57-3d8f2c1e0a11", Generation: 1}, s,
		plan.Options{FailurePolicy: rd.Spec.FailurePolicy}, minAvailable, minStaged, gates, "v0", time.Unix(1, 0))
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	out[planK] = raw(t, p)
	out[deployK] = raw(t, zklayout.DeployEntry{Deploy: rd.Name, Service: s.Name, Version: s.Version, Generation: 1})
	return out
}

// agentPayloads are valid payloads of every kind the seeder and the agents write.
func agentPayloads(t *testing.T) map[kind][]byte {
	t.Helper()
	now := time.Unix(1, 0).UTC()
	return map[kind][]byte{
		current: raw(t, zklayout.Current{Node: "node-1.example.com", Version: "v1", Address: "10.0.0.1", Health: zklayout.HealthHealthy,
			Since: now, Labels: map[string]string{"kubernetes.io/hostname": "node-1", "zone": "a"}}),
		staged:  raw(t, zklayout.Staged{Node: "node-1", Version: "v2", State: zklayout.StagedReady, Since: now, PinnedBytes: 4096}),
		failure: raw(t, zklayout.Failure{Node: "node-1", Version: "v2", Kind: zklayout.FailureHealthCheck, Reason: "exit 1", Time: now}),
		torrent: raw(t, zklayout.Torrent{Service: "web", Version: "v2", InfoHash: strings.Repeat("ab", 20), Size: 100 << 20,
			PieceLength: 64 << 10, MetaSize: 40_000, Chunks: 1}),
		peer:     raw(t, zklayout.Peer{Node: "node-1", Host: "10.0.0.1", Port: 6881, Zone: "a", Rack: "r1"}),
		progress: raw(t, zklayout.Progress{Node: "node-1", Version: "v2", Done: 1, Total: 2, Peers: 3, Rate: 4, Updated: now}),
	}
}

// raw marshals a payload as Encode would, without validating it.
func raw(t *testing.T, p any) []byte {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["schema"] = zklayout.SchemaVersion
	data, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// edit changes fields of a payload's JSON.
func edit(t *testing.T, data []byte, change func(m map[string]any)) []byte {
	t.Helper()
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func id(v int64) *int64 { return &v }

func obj(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

func strs(n int, s string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// constraints is the single list of constraints.
func constraints(t *testing.T) []constraint {
	t.Helper()
	var cs []constraint
	// spec: a RollingDeploy whose first service is changed by change; its payload of kind k,
	// built by the operator's own functions, violates the same constraint.
	spec := func(name string, k kind, change func(rd *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec)) {
		rd := validDeploy()
		change(rd, &rd.Spec.Services[0])
		cs = append(cs, constraint{name: name, obj: rd, kind: k, data: payloadsOf(t, rd)[k]})
	}
	// specJSON: for violations the operator's functions refuse before they build a payload
	// (a quorum they cannot resolve, a selector they cannot render), the payload is the valid
	// one with the same violation written into its JSON by hand.
	specJSON := func(name string, k kind, change func(rd *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec), payload func(m map[string]any)) {
		rd := validDeploy()
		change(rd, &rd.Spec.Services[0])
		cs = append(cs, constraint{name: name, obj: rd, kind: k, data: edit(t, payloadsOf(t, validDeploy())[k], payload)})
	}
	// node: a Node the API server refuses, and a payload naming or describing it.
	node := func(name string, n *corev1.Node, k kind, payload func(m map[string]any)) {
		cs = append(cs, constraint{name: name, obj: n, kind: k, data: edit(t, agentPayloads(t)[k], payload)})
	}
	// agent: constraints on payloads no API object carries (written by the seeder or agents).
	agent := func(name string, k kind, payload func(m map[string]any)) {
		cs = append(cs, constraint{name: name, kind: k, data: edit(t, agentPayloads(t)[k], payload)})
	}

	// Names.
	spec("service name is a DNS label", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Name = "Web_1" })
	spec("service name at most 63", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Name = strings.Repeat("w", 64) })
	spec("version pattern", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Version = "-v1" })
	spec("version has no slash", deployK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Version = "v1/../x" })
	spec("version at most 128", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Version = strings.Repeat("v", 129) })
	spec("deploy name is a DNS subdomain", planK, func(rd *v1alpha1.RollingDeploy, _ *v1alpha1.ServiceSpec) { rd.Name = "Shop_1" })
	spec("deploy name in deploy entries", deployK, func(rd *v1alpha1.RollingDeploy, _ *v1alpha1.ServiceSpec) { rd.Name = "shop..1" })
	spec("failure policy enum", planK, func(rd *v1alpha1.RollingDeploy, _ *v1alpha1.ServiceSpec) { rd.Spec.FailurePolicy = "Retry" })

	// Artifact.
	spec("url scheme", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Artifact.URL = "ftp://example.com/a" })
	spec("url scheme lowercase", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Artifact.URL = "HTTP://example.com/a" })
	spec("url at most 2048", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Artifact.URL = "https://example.com/" + strings.Repeat("a", 2049-len("https://example.com/"))
	})
	spec("sha256 is 64 lowercase hex", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Artifact.SHA256 = strings.ToUpper(sha) })
	spec("sha256 length", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Artifact.SHA256 = sha[:63] })
	spec("unpack enum", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Artifact.Unpack = "zip" })

	// Run.
	spec("run.command not empty", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.Command = nil })
	spec("run.command executable not empty", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.Command = []string{"", "x"} })
	spec("run.command at most 64", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.Command = strs(65, "x") })
	spec("run.command element at most 4096", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.Command = []string{"x", strings.Repeat("a", 4097)}
	})
	spec("run.args at most 256", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.Args = strs(257, "x") })
	spec("run.args element at most 4096", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.Args = []string{strings.Repeat("a", 4097)}
	})
	spec("env name pattern", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.Env = []v1alpha1.EnvVar{{Name: "1X"}} })
	spec("env name at most 256", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.Env = []v1alpha1.EnvVar{{Name: strings.Repeat("X", 257)}}
	})
	spec("env names unique", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.Env = []v1alpha1.EnvVar{{Name: "A", Value: "1"}, {Name: "A", Value: "2"}}
	})
	spec("env at most 256", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.Env = nil
		for i := range 257 {
			s.Run.Env = append(s.Run.Env, v1alpha1.EnvVar{Name: fmt.Sprintf("V%d", i)})
		}
	})
	spec("env value at most 32768", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.Env = []v1alpha1.EnvVar{{Name: "A", Value: strings.Repeat("a", 32769)}}
	})
	spec("stopGracePeriodSeconds not negative", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.StopGracePeriodSeconds = -1 })
	spec("stopGracePeriodSeconds at most 86400", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.StopGracePeriodSeconds = 86401 })
	spec("runAsUser not negative", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.RunAsUser = id(-1) })
	spec("runAsUser at most 4294967294", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.RunAsUser = id(zklayout.MaxRunAsID + 1)
	})
	spec("runAsGroup not negative", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.RunAsGroup = id(-1) })
	spec("runAsGroup at most 4294967294", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Run.RunAsGroup = id(zklayout.MaxRunAsID + 1)
	})
	spec("runAsGroup needs runAsUser", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.RunAsUser = nil })
	spec("runAsUser needs runAsGroup", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Run.RunAsGroup = nil })

	// Health check.
	spec("health check needs a probe", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.HealthCheck.HTTPGet = nil })
	// plan.Release keeps only the first probe, so the payload gets the second one by hand.
	specJSON("health check has one probe", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.TCPSocket = &v1alpha1.TCPSocketCheck{Port: 1}
	}, func(m map[string]any) { obj(m, "healthCheck")["tcpSocket"] = map[string]any{"port": 1} })
	for _, f := range []struct {
		name     string
		field    func(h *v1alpha1.HealthCheckSpec) *int32
		min, max int32
	}{
		{"timeoutSeconds", func(h *v1alpha1.HealthCheckSpec) *int32 { return &h.TimeoutSeconds }, 1, 3600},
		{"periodSeconds", func(h *v1alpha1.HealthCheckSpec) *int32 { return &h.PeriodSeconds }, 1, 3600},
		{"successThreshold", func(h *v1alpha1.HealthCheckSpec) *int32 { return &h.SuccessThreshold }, 1, 1000},
		{"failureThreshold", func(h *v1alpha1.HealthCheckSpec) *int32 { return &h.FailureThreshold }, 1, 1000},
	} {
		// 0 is omitted (omitempty) and defaulted, so the spec says -1; plan.Release would apply
		// the default too, so the payload carries the violation by hand.
		specJSON(f.name+" at least 1", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { *f.field(s.HealthCheck) = f.min - 2 },
			func(m map[string]any) { obj(m, "healthCheck")[f.name] = f.min - 1 })
		spec(fmt.Sprintf("%s at most %d", f.name, f.max), release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { *f.field(s.HealthCheck) = f.max + 1 })
	}
	for _, port := range []int32{-1, 0, 65536} {
		spec(fmt.Sprintf("httpGet port %d", port), release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.HealthCheck.HTTPGet.Port = port })
		spec(fmt.Sprintf("tcpSocket port %d", port), release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
			s.HealthCheck.HTTPGet, s.HealthCheck.TCPSocket = nil, &v1alpha1.TCPSocketCheck{Port: port}
		})
	}
	spec("httpGet scheme enum", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.HealthCheck.HTTPGet.Scheme = "FTP" })
	spec("httpGet path starts with /", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet.Path = "@evil.example.com/"
	})
	spec("httpGet path at most 2048", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet.Path = "/" + strings.Repeat("p", 2048)
	})
	spec("httpGet host is a host", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet.Host = "evil.example.com/x?"
	})
	spec("httpGet host at most 253", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet.Host = strings.Repeat("h", 254)
	})
	spec("tcpSocket host is a host", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet, s.HealthCheck.TCPSocket = nil, &v1alpha1.TCPSocketCheck{Host: "a b", Port: 1}
	})
	spec("exec command not empty", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet, s.HealthCheck.Exec = nil, &v1alpha1.ExecCheck{Command: []string{}}
	})
	spec("exec executable not empty", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet, s.HealthCheck.Exec = nil, &v1alpha1.ExecCheck{Command: []string{""}}
	})
	spec("exec command at most 64", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet, s.HealthCheck.Exec = nil, &v1alpha1.ExecCheck{Command: strs(65, "x")}
	})
	spec("exec element at most 4096", release, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.HealthCheck.HTTPGet, s.HealthCheck.Exec = nil, &v1alpha1.ExecCheck{Command: []string{"x", strings.Repeat("a", 4097)}}
	})

	// Counts.
	specJSON("minAvailable not negative", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Quorum.MinAvailable = intstr.FromInt32(-1) },
		func(m map[string]any) { m["minAvailable"] = -1 })
	spec("minStaged not negative", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		v := intstr.FromInt32(-1)
		s.Distribution.MinStaged = &v
	})
	spec("dependsOn at most 32", planK, func(rd *v1alpha1.RollingDeploy, _ *v1alpha1.ServiceSpec) {
		var deps []string
		for i := range 33 {
			name := fmt.Sprintf("dep-%d", i)
			deps = append(deps, name)
			rd.Spec.Services = append(rd.Spec.Services, v1alpha1.ServiceSpec{Name: name, Version: "v1",
				Artifact: v1alpha1.ArtifactSpec{URL: "file:///x", SHA256: sha}, Run: v1alpha1.RunSpec{Command: []string{"x"}}})
		}
		// s pointed into the array the appends replaced.
		rd.Spec.Services[0].DependsOn = deps
	})

	// Gates beyond the quorum.
	specJSON("maxUnavailable at least 1", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		v := intstr.FromInt32(0)
		s.Strategy.MaxUnavailable = &v
	}, func(m map[string]any) { m["maxUnavailable"] = -1 })
	specJSON("maxUnavailablePerDomain at least 1", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.Topology.MaxUnavailablePerDomain = -1
	}, func(m map[string]any) { obj(m, "topology")["maxUnavailablePerDomain"] = 0 })
	specJSON("minHealthyTime at most 24h", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.MinHealthyTime = &metav1.Duration{Duration: 25 * time.Hour}
	}, func(m map[string]any) { m["minHealthySeconds"] = 86401 })
	specJSON("maxFailures not negative", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		v := intstr.FromInt32(-1)
		s.Strategy.MaxFailures = &v
	}, func(m map[string]any) { m["maxFailures"] = -1 })
	specJSON("canary at least 1 node", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.Canary.Nodes = intstr.FromInt32(0)
	}, func(m map[string]any) { m["canary"] = -1 })
	specJSON("preStopCheck: exactly one of httpGet and exec", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.PreStopCheck.HTTPGet = &v1alpha1.HTTPGetCheck{Path: "/", Port: 8080, Scheme: "HTTP"}
	}, func(m map[string]any) {
		obj(m, "preStopCheck")["httpGet"] = map[string]any{"path": "/", "port": 8080, "scheme": "HTTP"}
	})
	spec("preStopCheck timeout at most 3600", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.PreStopCheck.TimeoutSeconds = 3601
	})
	spec("alertGate url is http(s)", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.AlertGate.URL = "file:///etc/passwd"
	})
	spec("alertGate query not empty", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Strategy.AlertGate.Query = "" })
	spec("window start is HH:MM", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.MaintenanceWindows[0].Start = "25:00"
	})
	spec("window end is HH:MM", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.MaintenanceWindows[0].End = "5:00"
	})
	spec("window day enum", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.MaintenanceWindows[0].Days = []v1alpha1.Weekday{"Funday"}
	})
	spec("window time zone name", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.MaintenanceWindows[0].TimeZone = "Europe/../etc"
	})
	spec("at most 16 windows", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		for range 16 {
			s.Strategy.MaintenanceWindows = append(s.Strategy.MaintenanceWindows, s.Strategy.MaintenanceWindows[0])
		}
	})
	// The zone database is the operator's and the agents', not the API server's.
	spec("window time zone exists", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.Strategy.MaintenanceWindows[0].TimeZone = "Mars/Olympus_Mons"
	})
	cs[len(cs)-1].operator = true
	spec("topology key is a label key", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.Strategy.Topology.Key = "bad key" })
	cs[len(cs)-1].operator = true
	spec("dependsOn names services", planK, func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) { s.DependsOn = []string{"Not_A_Service"} })

	// Selectors. CEL over metav1.LabelSelector's unbounded maps exceeds the API server's cost
	// budget, so the operator refuses these specs; it cannot render them either, so the payload
	// is written by hand.
	selector := func(name string, change func(rd *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec), payload func(m map[string]any)) {
		specJSON(name, planK, change, payload)
		cs[len(cs)-1].operator = true
	}
	selector("selector label key", func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.NodeSelector.MatchLabels = map[string]string{"bad key": "x"}
	}, func(m map[string]any) { m["selector"] = "bad key=x" })
	selector("selector label value", func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.NodeSelector.MatchLabels = map[string]string{"role": "no spaces"}
	}, func(m map[string]any) { m["selector"] = "role=no spaces" })
	selector("selector expression key", func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.NodeSelector.MatchExpressions[0].Key = "-zone"
	}, func(m map[string]any) { m["selector"] = "-zone in (a,b)" })
	// The string form cannot say "In, no values": values [""] render as "zone in ()", which
	// is valid. So only the API server half applies.
	{
		rd := validDeploy()
		rd.Spec.Services[0].NodeSelector.MatchExpressions[0].Values = nil
		cs = append(cs, constraint{name: "selector In needs values", obj: rd, operator: true})
	}
	selector("selector Exists takes no values", func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.NodeSelector.MatchExpressions[1].Values = []string{"x"}
	}, func(m map[string]any) { m["selector"] = "!drained (x)" })
	selector("selector operator", func(_ *v1alpha1.RollingDeploy, s *v1alpha1.ServiceSpec) {
		s.NodeSelector.MatchExpressions[0].Operator = "Near"
	}, func(m map[string]any) { m["selector"] = "zone near (a)" })

	// Nodes: a Node the API server refuses cannot register under that name or those labels.
	nodeNamed := func(name string, labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	node("node name is a DNS subdomain", nodeNamed("Node_1", nil), current, func(m map[string]any) { m["node"] = "Node_1" })
	node("node name at most 253", nodeNamed(strings.Repeat("n", 254), nil), staged, func(m map[string]any) { m["node"] = strings.Repeat("n", 254) })
	node("node name in failures", nodeNamed("node/1", nil), failure, func(m map[string]any) { m["node"] = "node/1" })
	node("node name in peers", nodeNamed("..", nil), peer, func(m map[string]any) { m["node"] = ".." })
	node("node name in progress", nodeNamed("-node", nil), progress, func(m map[string]any) { m["node"] = "-node" })
	node("node label key", nodeNamed("node-1", map[string]string{"bad key": "x"}), current, func(m map[string]any) {
		obj(m, "labels")["bad key"] = "x"
	})
	node("node label key prefix", nodeNamed("node-1", map[string]string{"Bad_Prefix/k": "x"}), current, func(m map[string]any) {
		obj(m, "labels")["Bad_Prefix/k"] = "x"
	})
	node("node label value", nodeNamed("node-1", map[string]string{"k": strings.Repeat("v", 64)}), current, func(m map[string]any) {
		obj(m, "labels")["k"] = strings.Repeat("v", 64)
	})

	// Payloads only the seeder and the agents write: sizes a reader allocates from, ports.
	agent("torrent metaSize bounded", torrent, func(m map[string]any) { m["metaSize"], m["chunks"] = 1<<62, 1<<43 })
	agent("torrent chunks match metaSize", torrent, func(m map[string]any) { m["chunks"] = 2 })
	agent("torrent piece length a power of two", torrent, func(m map[string]any) { m["pieceLength"] = 100_000 })
	agent("torrent piece length at most 16 MiB", torrent, func(m map[string]any) { m["pieceLength"] = 32 << 20 })
	agent("torrent size fits its piece hashes", torrent, func(m map[string]any) { m["size"] = 1 << 40 })
	agent("torrent infohash", torrent, func(m map[string]any) { m["infoHash"] = strings.Repeat("AB", 20) })
	agent("peer port at least 1", peer, func(m map[string]any) { m["port"] = 0 })
	agent("peer port at most 65535", peer, func(m map[string]any) { m["port"] = 65536 })
	agent("peer host", peer, func(m map[string]any) { m["host"] = "10.0.0.1/evil" })
	agent("staged state", staged, func(m map[string]any) { m["state"] = "dancing" })
	agent("failure reason bounded", failure, func(m map[string]any) { m["reason"] = strings.Repeat("r", zklayout.MaxTextLength+1) })
	agent("progress not negative", progress, func(m map[string]any) { m["rate"] = -1 })
	agent("payload at most 1 MiB", failure, func(m map[string]any) { m["padding"] = strings.Repeat(" ", zklayout.MaxPayloadSize) })
	return cs
}

func TestCRDAndZooKeeperAgree(t *testing.T) {
	ctrllog.SetLogger(logr.Discard()) // envtest logs through it; nothing here needs its logs
	cp, err := harness.StartControlPlane(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Dry-run creates: admission and validation run in full, nothing is stored.
	create := func(o client.Object) error { return cp.Client.Create(ctx, o, client.DryRunAll) }

	t.Run("valid", func(t *testing.T) {
		rd := validDeploy()
		if err := create(rd); err != nil {
			t.Fatalf("API server refused the valid RollingDeploy: %v", err)
		}
		if err := create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1.example.com", Labels: map[string]string{"kubernetes.io/hostname": "node-1"}}}); err != nil {
			t.Fatalf("API server refused the valid Node: %v", err)
		}
		all := payloadsOf(t, rd)
		for k, data := range agentPayloads(t) {
			all[k] = data
		}
		for k, data := range all {
			if err := zklayout.Decode(data, newPayload(k)); err != nil {
				t.Errorf("zklayout refused the valid %s: %v\n%s", k, err, data)
			}
		}
	})

	for _, c := range constraints(t) {
		t.Run(c.name, func(t *testing.T) {
			if rd, ok := c.obj.(*v1alpha1.RollingDeploy); ok && c.operator {
				if err := plan.Validate(rd.Spec); err == nil {
					t.Errorf("the operator's plan.Validate accepts the spec")
				}
			} else if c.obj != nil {
				err := create(c.obj)
				if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
					t.Errorf("API server: %v, want Invalid", err)
				}
			}
			if c.data == nil {
				return
			}
			if err := zklayout.Decode(c.data, newPayload(c.kind)); !errors.Is(err, zklayout.ErrMalformed) {
				t.Errorf("zklayout.Decode(%s) = %v, want ErrMalformed\n%.300s", c.kind, err, c.data)
			}
		})
	}
}
