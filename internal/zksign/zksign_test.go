package zksign_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/internal/zksign"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pubPEM(t testing.TB, k ed25519.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func privPEM(t testing.TB, k ed25519.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func entry() *zklayout.DeployEntry {
	return &zklayout.DeployEntry{Deploy: "web", Service: "a", Version: "v2", Generation: 3}
}

func TestSignVerifyDecode(t *testing.T) {
	k := newKey(t)
	s := zksign.NewSigner(k)
	l := zklayout.MustNew("/rk")
	p := l.DeployPrefix("a")
	data, err := s.Encode(p, entry())
	if err != nil {
		t.Fatal(err)
	}
	again, _ := s.Encode(p, entry())
	if !bytes.Equal(data, again) {
		t.Fatal("signing the same payload twice gave different bytes; the operator compares them")
	}
	ring := zksign.NewKeyring(s.Public())
	var got zklayout.DeployEntry
	if err := zksign.Decode(ring, p, data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != "v2" || got.Service != "a" {
		t.Fatalf("decoded %+v", got)
	}
	// Readers that know nothing of signatures still decode it.
	if err := zklayout.Decode(data, &got); err != nil {
		t.Fatal(err)
	}
	// Re-signing a signed payload replaces the signature.
	other := zksign.NewSigner(newKey(t))
	resigned, err := other.Sign(p, data)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := zksign.NewKeyring(other.Public()).Verify(p, resigned); err != nil || id != other.KeyID() {
		t.Fatalf("re-signed: id %q err %v", id, err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	k := newKey(t)
	s := zksign.NewSigner(k)
	l := zklayout.MustNew("/rk")
	rel := &zklayout.Release{Service: "a", Version: "v1",
		Artifact: zklayout.Artifact{URL: "https://example.com/a.tgz", SHA256: strings.Repeat("a", 64), Unpack: zklayout.UnpackNone},
		Run:      zklayout.Run{Command: []string{"/bin/true"}}}
	data, err := s.Encode(l.Release("a", "v1"), rel)
	if err != nil {
		t.Fatal(err)
	}
	ring := zksign.NewKeyring(s.Public())
	unsigned, _ := zklayout.Encode(rel)
	tampered := bytes.Replace(data, []byte("/bin/true"), []byte("/bin/sh!!"), 1)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	m["extra"] = 1
	added, _ := json.Marshal(m)
	foreign, _ := zksign.NewSigner(newKey(t)).Encode(l.Release("a", "v1"), rel)
	for _, c := range []struct {
		name, path string
		data       []byte
		want       error
	}{
		{"unsigned", l.Release("a", "v1"), unsigned, zksign.ErrUnsigned},
		{"tampered value", l.Release("a", "v1"), tampered, zksign.ErrBadSignature},
		{"member added", l.Release("a", "v1"), added, zksign.ErrBadSignature},
		{"other version's znode", l.Release("a", "v2"), data, zksign.ErrBadSignature},
		{"plan znode", l.StagingService("a"), data, zksign.ErrBadSignature},
		{"untrusted key", l.Release("a", "v1"), foreign, zksign.ErrUntrustedKey},
		{"not json", l.Release("a", "v1"), []byte("#!/bin/sh"), zklayout.ErrMalformed},
		{"bad signature member", l.Release("a", "v1"), []byte(`{"schema":1,"signature":"x"}`), zksign.ErrBadSignature},
	} {
		_, err := ring.Verify(c.path, c.data)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %q does not name the znode", c.name, err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	a, b := newKey(t), newKey(t)
	keys, err := zksign.ParseKeys(append(pubPEM(t, a), pubPEM(t, b)...))
	if err != nil || len(keys) != 2 || !keys[1].Equal(b.Public()) {
		t.Fatalf("keys %v err %v", keys, err)
	}
	if _, err := zksign.ParseKeys(append(pubPEM(t, a), "garbage"...)); err == nil {
		t.Fatal("trailing garbage accepted")
	}
	if _, err := zksign.ParseKeys(privPEM(t, a)); err == nil {
		t.Fatal("a private key accepted as a trusted key")
	}
	if k, err := zksign.ParsePrivateKey(privPEM(t, a)); err != nil || !k.Equal(a) {
		t.Fatalf("private key: %v", err)
	}
	if _, err := zksign.ParsePrivateKey(pubPEM(t, a)); err == nil {
		t.Fatal("a public key accepted as the signing key")
	}
}

// A key file is read again when it changes: a rotation adds a key, then drops the old one; a
// broken file trusts nothing.
func TestKeyFileFollowsRotation(t *testing.T) {
	old, next := zksign.NewSigner(newKey(t)), zksign.NewSigner(newKey(t))
	dir := t.TempDir()
	file := filepath.Join(dir, "trusted.pem")
	write := func(data []byte) {
		// A new file renamed over the old, as the kubelet's atomic writer does.
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	oldPub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, old.Public())})
	nextPub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, next.Public())})
	write(oldPub)
	kf, err := zksign.OpenKeyFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := zklayout.MustNew("/rk").StagingService("a")
	byOld, _ := old.Encode(p, entry())
	byNext, _ := next.Encode(p, entry())
	check := func(data []byte, ok bool) {
		t.Helper()
		if _, err := kf.Verify(p, data); (err == nil) != ok {
			t.Fatalf("verify: %v, want ok=%v", err, ok)
		}
	}
	check(byOld, true)
	check(byNext, false)
	if !kf.Lists(old.KeyID()) || kf.Lists(next.KeyID()) {
		t.Fatal("Lists does not follow the file")
	}
	write(append(oldPub, nextPub...))
	check(byOld, true)
	check(byNext, true)
	write(nextPub)
	check(byOld, false)
	check(byNext, true)
	write([]byte("not pem"))
	check(byNext, false)
	if _, err := kf.Verify(p, byNext); !strings.Contains(err.Error(), file) {
		t.Fatalf("%v does not name the key file", err)
	}
	write(nil)
	check(byNext, false)
	if _, err := zksign.OpenKeyFile(file); err == nil {
		t.Fatal("an empty key file opened: nothing would ever be trusted")
	}
	own, err := zksign.OpenKeyFile(file, next.Public())
	if err != nil {
		t.Fatalf("an empty extra-keys file with an own key: %v", err)
	}
	// A broken file leaves the own key trusted, and only it.
	write([]byte("not pem"))
	if _, err := own.Verify(p, byNext); err != nil {
		t.Fatalf("own key with a broken file: %v", err)
	}
	if _, err := own.Verify(p, byOld); err == nil {
		t.Fatal("a broken file trusted another key")
	}
}

func mustPKIX(t testing.TB, pub ed25519.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// FuzzVerify: no input panics; whatever verifies was signed for that znode, and a payload
// changed anywhere no longer verifies.
func FuzzVerify(f *testing.F) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	s := zksign.NewSigner(k)
	ring := zksign.NewKeyring(s.Public())
	p := zklayout.MustNew("/rk").DeployPrefix("a")
	good, err := s.Encode(p, entry())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`{"signature":{"key":"00","ed25519":"AAAA"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := ring.Verify(p, data)
		var e zklayout.DeployEntry
		derr := zksign.Decode(ring, p, data, &e)
		if err != nil && derr == nil {
			t.Fatal("Decode accepted what Verify refused")
		}
		if err == nil {
			// Signing what verified reproduces a valid signature (canonical form).
			again, serr := s.Sign(p, data)
			if serr != nil {
				t.Fatalf("re-sign: %v", serr)
			}
			if _, err := ring.Verify(p, again); err != nil {
				t.Fatalf("re-signed payload: %v", err)
			}
		}
	})
}

// FuzzParseKeys: no input panics.
func FuzzParseKeys(f *testing.F) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := zksign.ParseKeys(data)
		if err == nil {
			for _, k := range keys {
				if len(k) != ed25519.PublicKeySize {
					t.Fatalf("key of %d bytes", len(k))
				}
			}
		}
		_, _ = zksign.ParsePrivateKey(data)
	})
}
