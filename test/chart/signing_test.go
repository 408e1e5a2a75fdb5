package chart

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/rollkeeper/rollkeeper/internal/zksign"
)

// Where the chart and config/ mount the signing key and the trusted keys.
const (
	signingKeyFile  = "/etc/rollkeeper/signing/signing.key"
	trustedKeysFile = "/etc/rollkeeper/trusted-keys/trusted-keys.pem"
)

// parsePrivateKey parses the PEM "PRIVATE KEY" (PKCS#8) the operator signs with, as the operator
// reads it (zksign), and checks it is the only block.
func parsePrivateKey(t testing.TB, b []byte) ed25519.PrivateKey {
	t.Helper()
	if _, rest := pem.Decode(b); len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("signing key: want one PEM PRIVATE KEY block, %d bytes follow it", len(rest))
	}
	priv, err := zksign.ParsePrivateKey(b)
	if err != nil {
		t.Fatalf("signing key: %v", err)
	}
	return priv
}

// parseTrustedKeys parses a trusted-keys file as the binaries read it (zksign.ParseKeys): PEM
// "PUBLIC KEY" (PKIX) and "CERTIFICATE" blocks whose key is ed25519, nothing else.
func parseTrustedKeys(t testing.TB, b []byte) []ed25519.PublicKey {
	t.Helper()
	keys, err := zksign.ParseKeys(b)
	if err != nil {
		t.Fatalf("trusted keys: %v", err)
	}
	return keys
}

func hasKey(keys []ed25519.PublicKey, k ed25519.PublicKey) bool {
	return slices.ContainsFunc(keys, func(o ed25519.PublicKey) bool { return o.Equal(k) })
}

// newPublicKeyPEM returns a fresh ed25519 public key, PEM "PUBLIC KEY" (what openssl pkey -pubout
// writes).
func newPublicKeyPEM(t testing.TB) (ed25519.PublicKey, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pub, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// valuesFile writes values (a YAML-able map) to a file for helm -f.
func valuesFile(t testing.TB, values map[string]any) string {
	t.Helper()
	b, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envValue(env []corev1.EnvVar, name string) (string, bool) {
	for _, e := range env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// volumeMountedAt returns the volume c mounts at dir (never with subPath, which the kubelet does
// not update), or nil.
func volumeMountedAt(t testing.TB, who string, pod corev1.PodSpec, c corev1.Container, dir string) *corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		if !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("%s: %s mounted %+v, want read-only without subPath", who, dir, m)
		}
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == m.Name {
				return &pod.Volumes[i]
			}
		}
	}
	return nil
}

// secretsOf lists the Secrets a pod's volumes (projected ones included) and its container's env
// read.
func secretsOf(pod corev1.PodSpec, c corev1.Container) []string {
	var names []string
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			names = append(names, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					names = append(names, s.Secret.Name)
				}
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			names = append(names, e.ValueFrom.SecretKeyRef.Name)
		}
	}
	for _, f := range c.EnvFrom {
		if f.SecretRef != nil {
			names = append(names, f.SecretRef.Name)
		}
	}
	return names
}

// checkSigningMounts: the operator reads key signing.key of Secret secret and the trusted keys
// of ConfigMap configMap, as files; the agent reads the same ConfigMap and never the Secret.
func checkSigningMounts(t *testing.T, where string, dep appsv1.Deployment, ds appsv1.DaemonSet, secret, configMap string) {
	t.Helper()
	pod, c := dep.Spec.Template.Spec, dep.Spec.Template.Spec.Containers[0]
	if v, _ := envValue(c.Env, "ROLLKEEPER_SIGNING_KEY_FILE"); v != signingKeyFile {
		t.Errorf("%s operator: ROLLKEEPER_SIGNING_KEY_FILE %q, want %s", where, v, signingKeyFile)
	}
	vol := volumeMountedAt(t, where+" operator", pod, c, filepath.Dir(signingKeyFile))
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != secret || len(vol.Secret.Items) != 1 ||
		vol.Secret.Items[0].Key != "signing.key" || vol.Secret.Items[0].Path != "signing.key" {
		t.Errorf("%s operator: signing key volume %+v, want key signing.key of Secret %s", where, vol, secret)
	}
	apod, ac := ds.Spec.Template.Spec, ds.Spec.Template.Spec.Containers[0]
	for who, pc := range map[string]struct {
		pod corev1.PodSpec
		c   corev1.Container
	}{"operator": {pod, c}, "agent": {apod, ac}} {
		if v, _ := envValue(pc.c.Env, "ROLLKEEPER_TRUSTED_KEYS_FILE"); v != trustedKeysFile {
			t.Errorf("%s %s: ROLLKEEPER_TRUSTED_KEYS_FILE %q, want %s", where, who, v, trustedKeysFile)
		}
		vol := volumeMountedAt(t, where+" "+who, pc.pod, pc.c, filepath.Dir(trustedKeysFile))
		if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != configMap ||
			(len(vol.ConfigMap.Items) != 0 && !slices.ContainsFunc(vol.ConfigMap.Items, func(k corev1.KeyToPath) bool { return k.Path == "trusted-keys.pem" })) {
			t.Errorf("%s %s: trusted keys volume %+v, want ConfigMap %s", where, who, vol, configMap)
		}
		if _, ok := envValue(pc.c.Env, "ROLLKEEPER_INSECURE_ALLOW_UNSIGNED_PLANS"); ok {
			t.Errorf("%s %s: env has ROLLKEEPER_INSECURE_ALLOW_UNSIGNED_PLANS", where, who)
		}
	}
	// Nodes never hold the private key.
	if read := secretsOf(apod, ac); slices.Contains(read, secret) {
		t.Errorf("%s agent reads the signing key's Secret %s (it reads Secrets %v)", where, secret, read)
	}
	if _, ok := envValue(ac.Env, "ROLLKEEPER_SIGNING_KEY_FILE"); ok {
		t.Errorf("%s agent: env has ROLLKEEPER_SIGNING_KEY_FILE", where)
	}
}

// trustedKeysOf parses the trusted-keys.pem of the rendered ConfigMap *-trusted-keys.
func trustedKeysOf(t *testing.T, objs []*unstructured.Unstructured) (name string, keys []ed25519.PublicKey) {
	t.Helper()
	cm := one(t, objs, "ConfigMap", "-trusted-keys")
	pemData, _, _ := unstructured.NestedString(cm.Object, "data", "trusted-keys.pem")
	return cm.GetName(), parseTrustedKeys(t, []byte(pemData))
}

// Default: the chart generates an ed25519 key into a kept Secret (the operator's only) and puts
// its public half in the ConfigMap both the operator and the agents read.
func TestTemplateSigningGenerated(t *testing.T) {
	objs := render(t, defaultRelease)
	sec := one(t, objs, "Secret", "-signing")
	if sec.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the signing key Secret is not kept on uninstall: %v", sec.GetAnnotations())
	}
	data := func(key string) []byte {
		s, _, _ := unstructured.NestedString(sec.Object, "data", key)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) == 0 {
			t.Fatalf("Secret %s key %s: %q (%v)", sec.GetName(), key, s, err)
		}
		return b
	}
	priv := parsePrivateKey(t, data("signing.key"))
	pub := priv.Public().(ed25519.PublicKey)
	if crt := parseTrustedKeys(t, data("signing.crt")); len(crt) != 1 || !crt[0].Equal(pub) {
		t.Errorf("signing.crt does not hold the signing key's public half")
	}
	cmName, keys := trustedKeysOf(t, objs)
	if len(keys) != 1 || !keys[0].Equal(pub) {
		t.Errorf("ConfigMap %s trusts %d key(s), want exactly the generated key's public half", cmName, len(keys))
	}
	// A signature made with the Secret's key verifies with the ConfigMap's.
	msg := []byte("staging/a")
	if !ed25519.Verify(keys[0], msg, ed25519.Sign(priv, msg)) {
		t.Error("a signature with the generated key does not verify with the trusted key")
	}

	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	checkSigningMounts(t, "chart", dep, ds, sec.GetName(), cmName)

	// Two renders generate two different keys (nothing is hard-coded); helm install and upgrade
	// keep the first (TestHelmInstallUninstall).
	sec2 := one(t, render(t, defaultRelease), "Secret", "-signing")
	k1, _, _ := unstructured.NestedString(sec.Object, "data", "signing.key")
	k2, _, _ := unstructured.NestedString(sec2.Object, "data", "signing.key")
	if k1 == k2 {
		t.Error("two renders without a cluster generated the same signing key")
	}
}

// signing.existingSecret: no key is generated, the Secret named is mounted into the operator,
// and the ConfigMap trusts exactly signing.trustedKeys (public keys or certificates). A change
// of the trusted keys changes the agents' pod template in nothing: they re-read the file, and a
// change of trust restarts no agent.
func TestTemplateSigningExistingSecret(t *testing.T) {
	pubA, pemA := newPublicKeyPEM(t)
	pubB, _ := newPublicKeyPEM(t)
	withKeys := func(keys ...string) release {
		return release{name: "rk", namespace: "rk-signing", valuesFiles: []string{valuesFile(t, map[string]any{
			"zookeeper": map[string]any{"servers": "zk:2181"},
			"signing":   map[string]any{"existingSecret": "plan-signing", "trustedKeys": keys},
		})}}
	}
	objs := render(t, withKeys(pemA))
	for _, s := range byKind(objs, "Secret") {
		if strings.HasSuffix(s.GetName(), "-signing") {
			t.Errorf("Secret %s rendered with signing.existingSecret", s.GetName())
		}
	}
	cmName, keys := trustedKeysOf(t, objs)
	if len(keys) != 1 || !keys[0].Equal(pubA) {
		t.Errorf("ConfigMap %s trusts %d key(s), want exactly signing.trustedKeys", cmName, len(keys))
	}
	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	checkSigningMounts(t, "chart", dep, ds, "plan-signing", cmName)

	// Rotation: the old and the new key, the new one as a certificate.
	certB := selfSignedEd25519(t, pubB)
	objs2 := render(t, withKeys(pemA, certB))
	if _, keys := trustedKeysOf(t, objs2); len(keys) != 2 || !hasKey(keys, pubA) || !hasKey(keys, pubB) {
		t.Errorf("with two trusted keys the ConfigMap trusts %d key(s), want both", len(keys))
	}
	var ds2 appsv1.DaemonSet
	convert(t, one(t, objs2, "DaemonSet", "-agent"), &ds2)
	if !reflect.DeepEqual(ds.Spec.Template, ds2.Spec.Template) {
		t.Errorf("a change of signing.trustedKeys changes the agents' pod template (restarting every agent):\nbefore %+v\nafter  %+v",
			ds.Spec.Template, ds2.Spec.Template)
	}
}

// selfSignedEd25519 returns a PEM CERTIFICATE whose key is pub (signed by a throwaway key: only
// the certificate's key matters to rollkeeper).
func selfSignedEd25519(t testing.TB, pub ed25519.PublicKey) string {
	t.Helper()
	_, signer, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// Values the chart refuses, with a message that says what to do and never quotes a key.
func TestTemplateSigningRefusals(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	privBody := strings.Split(privPEM, "\n")[1]
	cases := []struct {
		name    string
		signing map[string]any
		want    string
	}{
		{"existing-secret-without-trusted-keys", map[string]any{"existingSecret": "plan-signing"},
			"signing.existingSecret (plan-signing) needs signing.trustedKeys: list its public key there"},
		{"private-key-in-trusted-keys", map[string]any{"trustedKeys": []string{privPEM}},
			"signing.trustedKeys[0] holds a PRIVATE KEY: list public keys only"},
		{"not-pem", map[string]any{"trustedKeys": []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"}},
			`signing.trustedKeys[0] is not a PEM "PUBLIC KEY" or "CERTIFICATE" block`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := release{name: "rk", namespace: "rk-bad-signing", valuesFiles: []string{valuesFile(t, map[string]any{
				"zookeeper": map[string]any{"servers": "zk:2181"}, "signing": tc.signing})}}
			args := append([]string{"template", r.name, "charts/rollkeeper", "--namespace", r.namespace}, r.helmArgs(t)...)
			out, stderr, err := runHelm(t, args...)
			if err == nil {
				t.Fatalf("helm template accepted signing %v", tc.signing)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("helm template refused without %q:\n%s", tc.want, stderr)
			}
			if strings.Contains(out+stderr, privBody) {
				t.Errorf("helm's output quotes the private key:\n%s", stderr)
			}
			t.Logf("refused: %s", strings.TrimSpace(stderr))
		})
	}
}

// signing.insecureAllowUnsigned runs both without keys, by name: no Secret, no ConfigMap, the
// INSECURE flag in the environment of both.
func TestTemplateUnsignedPlans(t *testing.T) {
	objs := render(t, release{name: "rk", namespace: "rk-unsigned", set: []string{"zookeeper.servers=zk:2181", "signing.insecureAllowUnsigned=true"}})
	for _, o := range objs {
		if (o.GetKind() == "Secret" && strings.HasSuffix(o.GetName(), "-signing")) || (o.GetKind() == "ConfigMap" && strings.HasSuffix(o.GetName(), "-trusted-keys")) {
			t.Errorf("%s %s rendered with signing.insecureAllowUnsigned", o.GetKind(), o.GetName())
		}
	}
	var dep appsv1.Deployment
	convert(t, one(t, objs, "Deployment", "-manager"), &dep)
	var ds appsv1.DaemonSet
	convert(t, one(t, objs, "DaemonSet", "-agent"), &ds)
	for who, pod := range map[string]corev1.PodSpec{"operator": dep.Spec.Template.Spec, "agent": ds.Spec.Template.Spec} {
		c := pod.Containers[0]
		if v, _ := envValue(c.Env, "ROLLKEEPER_INSECURE_ALLOW_UNSIGNED_PLANS"); v != "true" {
			t.Errorf("%s: env lacks ROLLKEEPER_INSECURE_ALLOW_UNSIGNED_PLANS=true: %+v", who, c.Env)
		}
		for _, name := range []string{"ROLLKEEPER_SIGNING_KEY_FILE", "ROLLKEEPER_TRUSTED_KEYS_FILE"} {
			if _, ok := envValue(c.Env, name); ok {
				t.Errorf("%s: env has %s with signing.insecureAllowUnsigned", who, name)
			}
		}
		for _, v := range pod.Volumes {
			if v.Name == "signing-key" || v.Name == "trusted-keys" {
				t.Errorf("%s: volume %s with signing.insecureAllowUnsigned", who, v.Name)
			}
		}
	}
}
