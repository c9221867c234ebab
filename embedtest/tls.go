package embedtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// TLSFiles are the PEM files of a test certificate authority, a server
// certificate for 127.0.0.1 and localhost, and a client certificate, all
// signed by that authority.
type TLSFiles struct {
	CAFile                        string
	ServerCertFile, ServerKeyFile string
	ClientCertFile, ClientKeyFile string
}

// GenerateTLS writes a fresh test authority and certificates into dir
// (valid for a day; for tests only).
func GenerateTLS(dir string) (TLSFiles, error) {
	f := TLSFiles{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "concord test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	if err := writePEM(f.CAFile, "CERTIFICATE", caDER); err != nil {
		return f, err
	}
	if err := writeLeaf(ca, caKey, 2, "127.0.0.1", x509.ExtKeyUsageServerAuth, f.ServerCertFile, f.ServerKeyFile); err != nil {
		return f, err
	}
	return f, writeLeaf(ca, caKey, 3, "concord test client", x509.ExtKeyUsageClientAuth, f.ClientCertFile, f.ClientKeyFile)
}

// writeLeaf writes a certificate for cn signed by ca, and its key.
func writeLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial int64, cn string, usage x509.ExtKeyUsage, certFile, keyFile string) error {
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(keyFile, "EC PRIVATE KEY", kder)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// WithTLS serves clients over TLS with f's server certificate and requires
// client certificates signed by f's authority; the Server's own clients
// present f's client certificate.
func WithTLS(f TLSFiles) Option { return optionFunc(func(c *config) { c.tls = &f }) }

// serverTLS is the member's client-port TLS setting.
func (f *TLSFiles) serverTLS() transport.TLSInfo {
	return transport.TLSInfo{CertFile: f.ServerCertFile, KeyFile: f.ServerKeyFile, TrustedCAFile: f.CAFile, ClientCertAuth: true}
}

// clientTLS is the TLS config of the Server's own clients.
func (f *TLSFiles) clientTLS() (*tls.Config, error) {
	cfg, err := transport.TLSInfo{CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile, TrustedCAFile: f.CAFile}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("embedtest: client TLS: %w", err)
	}
	return cfg, nil
}
