package zkclient_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// TLS to the real ZooKeeper (its secureClientPort, client certificates required): a client
// with the right CA and certificate works; without a certificate, with another CA, with a
// wrong server name, or in plain text, it gets no session.
func TestTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	pki, err := zkserver.WritePKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := zkserver.StartWith(ctx, filepath.Join(dir, "zk"), 1, zkserver.Options{TLS: pki.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	files := zkclient.TLSFiles{CA: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}

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

	other, err := zkserver.WritePKI(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*zkclient.TLSFiles{
		"no client certificate": {CA: files.CA},
		"another CA":            {CA: other.CA, Cert: files.Cert, Key: files.Key},
		"another CA's client":   {CA: files.CA, Cert: other.ClientCert, Key: other.ClientKey},
		"wrong server name":     {CA: files.CA, Cert: files.Cert, Key: files.Key, ServerName: "not-zookeeper"},
		"plain text":            nil,
	} {
		if c, err := dial(f); err == nil {
			c.Close()
			t.Errorf("%s: got a session", name)
		}
	}
}

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
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
