package zkclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and PKCS#8 key (PEM) for name, valid for 127.0.0.1 too.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}

func write(t *testing.T, dir, name string, parts ...[]byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	var b []byte
	for _, part := range parts {
		b = append(b, part...)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TLS to the real ZooKeeper (its secureClientPort, client certificates required): a client
// with the right CA and certificate works; without a certificate, with another CA, with a
// wrong server name, or in plain text, it gets no session.
func TestTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ca := newCA(t, "rollkeeper-test-ca")
	srvCert, srvKey := ca.issue(t, "zookeeper", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, "rollkeeper", x509.ExtKeyUsageClientAuth)
	tlsFiles := &zkserver.TLS{KeyStore: write(t, dir, "server.pem", srvKey, srvCert), TrustStore: write(t, dir, "ca.pem", ca.pem)}
	e, err := zkserver.StartWith(ctx, filepath.Join(dir, "zk"), 1, zkserver.Options{TLS: tlsFiles})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	files := zkclient.TLSFiles{CA: write(t, dir, "client-ca.pem", ca.pem), Cert: write(t, dir, "client.crt", cliCert), Key: write(t, dir, "client.key", cliKey)}

	dial := func(f *zkclient.TLSFiles) (*zkclient.Client, error) {
		cfg := zkclient.Config{Servers: zkclient.ParseServers(e.SecureConnect()), DialTimeout: 5 * time.Second, Logger: logr.Discard()}
		if f != nil {
			tc, err := zkclient.LoadTLS(*f)
			if err != nil {
				return nil, err
			}
			cfg.TLS = tc
		}
		return zkclient.Dial(ctx, cfg)
	}
	c, err := dial(&files)
	if err != nil {
		t.Fatalf("TLS client: %v\n(server log: %s)", err, e.Servers[0].Dir)
	}
	if _, err := c.Create(ctx, "/tls-works", []byte("yes"), zkclient.Persistent); err != nil {
		t.Fatal(err)
	}
	c.Close()

	other := newCA(t, "someone-else")
	for name, f := range map[string]*zkclient.TLSFiles{
		"no client certificate": {CA: files.CA},
		"another CA":            {CA: write(t, dir, "other-ca.pem", other.pem), Cert: files.Cert, Key: files.Key},
		"wrong server name":     {CA: files.CA, Cert: files.Cert, Key: files.Key, ServerName: "not-zookeeper"},
		"plain text":            nil,
	} {
		if c, err := dial(f); err == nil {
			c.Close()
			t.Errorf("%s: got a session", name)
		}
	}
}

func TestLoadTLSErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		f    zkclient.TLSFiles
		want string
	}{
		{zkclient.TLSFiles{}, "CA file is required"},
		{zkclient.TLSFiles{CA: write(t, dir, "ca", []byte("x")), Cert: "c"}, "go together"},
		{zkclient.TLSFiles{CA: write(t, dir, "junk", []byte("not pem"))}, "no PEM certificate"},
		{zkclient.TLSFiles{CA: filepath.Join(dir, "missing")}, "no such file"},
	} {
		if _, err := zkclient.LoadTLS(tc.f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadTLS(%+v) = %v, want %q", tc.f, err, tc.want)
		}
	}
}
