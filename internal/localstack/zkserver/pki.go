package zkserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throwaway certificate authority with a server and a client certificate, as PEM
// files, for TLS between rollkeeper and ZooKeeper in tests.
type PKI struct {
	// CA is the authority's certificate; ServerKeyStore the server's key and certificate in one
	// file (ZooKeeper's PEM key store); ClientCert and ClientKey the client's.
	CA, ServerKeyStore, ClientCert, ClientKey string
	// ServerName is in the server certificate (as is 127.0.0.1).
	ServerName string
}

// TLS is what a server started with this PKI uses.
func (p PKI) TLS() *TLS { return &TLS{KeyStore: p.ServerKeyStore, TrustStore: p.CA} }

// WritePKI writes a new PKI under dir (valid for a day).
func WritePKI(dir string) (PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return PKI{}, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PKI{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rollkeeper test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return PKI{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return PKI{}, err
	}
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		pk, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), nil
	}
	p := PKI{CA: filepath.Join(dir, "ca.pem"), ServerKeyStore: filepath.Join(dir, "server.pem"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"), ServerName: "zookeeper"}
	srvCert, srvKey, err := issue(p.ServerName, 2, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return PKI{}, err
	}
	cliCert, cliKey, err := issue("rollkeeper", 3, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return PKI{}, err
	}
	for path, data := range map[string][]byte{
		p.CA:             pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		p.ServerKeyStore: append(srvKey, srvCert...),
		p.ClientCert:     cliCert,
		p.ClientKey:      cliKey,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return PKI{}, fmt.Errorf("pki: %w", err)
		}
	}
	return p, nil
}
