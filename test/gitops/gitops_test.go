package gitops

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	"github.com/rollkeeper/rollkeeper/test/harness"
)

// The snippets users paste (argocd-cm, argo-cd chart values) carry health.lua verbatim.
func TestArgoSnippetsCarryTheScript(t *testing.T) {
	script, err := ArgoScript()
	if err != nil {
		t.Fatal(err)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const key = "resource.customizations.health.rollkeeper.io_RollingDeploy"
	for file, path := range map[string][]string{
		"argocd-cm.yaml":      {"data", key},
		"argo-cd-values.yaml": {"configs", "cm", key},
	} {
		b, err := os.ReadFile(filepath.Join(root, "docs", "argocd", file))
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var v any = doc
		for _, k := range path {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		if got, _ := v.(string); got != script {
			t.Errorf("%s: %v does not hold docs/argocd/health.lua verbatim", file, path)
		}
	}
}

// Objects the e2e runs cannot produce on purpose: no status yet, and a status without
// conditions.
func TestHealthBeforeTheOperatorWrites(t *testing.T) {
	script, err := ArgoScript()
	if err != nil {
		t.Fatal(err)
	}
	for name, obj := range map[string]map[string]any{
		"no status": {"apiVersion": "rollkeeper.io/v1alpha1", "kind": "RollingDeploy",
			"metadata": map[string]any{"name": "a", "generation": int64(1)}, "spec": map[string]any{}},
		"empty status": {"apiVersion": "rollkeeper.io/v1alpha1", "kind": "RollingDeploy",
			"metadata": map[string]any{"name": "a", "generation": int64(1)}, "spec": map[string]any{},
			"status": map[string]any{"observedGeneration": int64(1)}},
	} {
		h, err := ArgoHealth(script, obj)
		if err != nil || h.Status != Progressing {
			t.Errorf("%s: Argo CD health %+v (%v), want Progressing", name, h, err)
		}
		// kstatus has nothing to go by on an object without a status and calls it Current: a
		// Flux health check right after the apply can pass before the operator's first status
		// write (docs/gitops.md says so). Once a status exists, observedGeneration rules.
		if name == "no status" {
			if st, _, err := KStatus(obj); err != nil || st != status.CurrentStatus {
				t.Errorf("%s: kstatus %s (%v), want Current", name, st, err)
			}
		}
	}
}
