package zkclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
)

// maxPEMFile bounds what LoadTLS reads from each file.
const maxPEMFile = 1 << 20

// TLSFiles names the PEM files of a TLS connection to ZooKeeper.
type TLSFiles struct {
	// CA holds the certificates the servers' must chain to (required).
	CA string
	// Cert and Key are this client's certificate chain and private key, for servers that require
	// client certificates (ZooKeeper's ssl.clientAuth=need); both or neither.
	Cert, Key string
	// ServerName is checked against the servers' certificates (default: each address's host).
	ServerName string
}

// Enabled reports whether any TLS file or name is given.
func (f TLSFiles) Enabled() bool { return f != TLSFiles{} }

// LoadTLS builds the client's TLS configuration from f (TLS 1.2 at least).
func LoadTLS(f TLSFiles) (*tls.Config, error) {
	if f.CA == "" {
		return nil, errors.New("ZooKeeper TLS: a CA file is required (--zk-tls-ca-file): without it any server would do")
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("ZooKeeper TLS: a client certificate and its key go together (--zk-tls-cert-file, --zk-tls-key-file)")
	}
	ca, err := readPEM(f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("ZooKeeper TLS: no PEM certificate in %s", f.CA)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: f.ServerName, MinVersion: tls.VersionTLS12}
	if f.Cert != "" {
		certPEM, err := readPEM(f.Cert)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readPEM(f.Key)
		if err != nil {
			return nil, err
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("ZooKeeper TLS: client certificate %s and key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func readPEM(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ZooKeeper TLS: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("ZooKeeper TLS: read %s: %w", path, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("ZooKeeper TLS: %s is larger than %d bytes", path, maxPEMFile)
	}
	return b, nil
}
