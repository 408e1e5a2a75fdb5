package chart

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// helm install and helm uninstall against the test API server: the release installs (NOTES
// included), its objects exist, and uninstall leaves none behind but the CRD (helm never
// deletes crds/). Nothing runs the pods: the test API server has no kubelet.
func TestHelmInstallUninstall(t *testing.T) {
	cp := controlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns, rel = "rk-helm", "helmrel"
	kc := "--kubeconfig=" + cp.Kubeconfig

	out, stderr, err := runHelm(t, "install", rel, "charts/rollkeeper", "--namespace", ns, "--create-namespace",
		"--set", "zookeeper.servers=zk-0.zk:2181", kc)
	if err != nil {
		t.Fatalf("helm install: %v\n%s%s", err, out, stderr)
	}
	for _, want := range []string{"NOTES:", "Next steps", "rollout status deployment/" + rel + "-rollkeeper-manager", "kubectl get rd -w"} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output lacks %q:\n%s", want, out)
		}
	}
	objects := []client.Object{
		&appsv1.Deployment{}, &appsv1.DaemonSet{}, &rbacv1.ClusterRole{}, &rbacv1.ClusterRole{},
	}
	keys := []client.ObjectKey{
		{Namespace: ns, Name: rel + "-rollkeeper-manager"}, {Namespace: ns, Name: rel + "-rollkeeper-agent"},
		{Name: rel + "-rollkeeper-manager"}, {Name: rel + "-rollkeeper-agent"},
	}
	for i, o := range objects {
		if err := cp.Client.Get(ctx, keys[i], o); err != nil {
			t.Errorf("after install: %T %s: %v", o, keys[i], err)
		}
	}

	// The generated ZooKeeper credentials survive an upgrade: the tree is locked to them.
	secret := func() string {
		sec := &corev1.Secret{}
		if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: rel + "-rollkeeper-zk-auth"}, sec); err != nil {
			t.Fatalf("ZooKeeper credentials Secret: %v", err)
		}
		if !strings.HasPrefix(string(sec.Data["auth"]), "rollkeeper:") {
			t.Fatalf("ZooKeeper credentials %q: want rollkeeper:<generated>", sec.Data["auth"])
		}
		return string(sec.Data["auth"])
	}
	installed := secret()
	// The generated signing key survives an upgrade too, and the trusted keys' ConfigMap keeps
	// carrying its public half: what ZooKeeper holds stays signed with a key the agents trust.
	signingKey := func() ed25519.PrivateKey {
		sec := &corev1.Secret{}
		if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: rel + "-rollkeeper-signing"}, sec); err != nil {
			t.Fatalf("signing key Secret: %v", err)
		}
		if sec.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("signing key Secret not kept on uninstall: %v", sec.Annotations)
		}
		priv := parsePrivateKey(t, sec.Data["signing.key"])
		cm := &corev1.ConfigMap{}
		if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: rel + "-rollkeeper-trusted-keys"}, cm); err != nil {
			t.Fatalf("trusted keys ConfigMap: %v", err)
		}
		if keys := parseTrustedKeys(t, []byte(cm.Data["trusted-keys.pem"])); len(keys) != 1 || !keys[0].Equal(priv.Public()) {
			t.Errorf("ConfigMap %s trusts %d key(s), want the signing key's public half", cm.Name, len(keys))
		}
		return priv
	}
	installedKey := signingKey()
	if out, stderr, err := runHelm(t, "upgrade", rel, "charts/rollkeeper", "--namespace", ns,
		"--set", "zookeeper.servers=zk-0.zk:2181", kc); err != nil {
		t.Fatalf("helm upgrade: %v\n%s%s", err, out, stderr)
	}
	if upgraded := secret(); upgraded != installed {
		t.Errorf("helm upgrade changed the generated ZooKeeper credentials")
	}
	if upgraded := signingKey(); !upgraded.Equal(installedKey) {
		t.Errorf("helm upgrade changed the generated signing key")
	}

	if out, stderr, err := runHelm(t, "uninstall", rel, "--namespace", ns, kc); err != nil {
		t.Fatalf("helm uninstall: %v\n%s%s", err, out, stderr)
	}
	for i, o := range objects {
		if err := cp.Client.Get(ctx, keys[i], o); !apierrors.IsNotFound(err) {
			t.Errorf("after uninstall: %T %s still there (err %v)", o, keys[i], err)
		}
	}
	// The generated Secrets are kept (helm.sh/resource-policy: keep), the ConfigMap is not.
	for _, name := range []string{rel + "-rollkeeper-zk-auth", rel + "-rollkeeper-signing"} {
		if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.Secret{}); err != nil {
			t.Errorf("after uninstall: Secret %s: %v, want it kept", name, err)
		}
	}
	if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: rel + "-rollkeeper-trusted-keys"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("after uninstall: ConfigMap %s-rollkeeper-trusted-keys still there (err %v)", rel, err)
	}
}
