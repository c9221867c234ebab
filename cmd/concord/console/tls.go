package console

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSConfig is the console's HTTPS configuration: the server certificate
// and key in certFile and keyFile (PEM) and, when clientCAFile is set,
// client certificates required on every connection and verified against
// the CA bundle in clientCAFile: a browser without a certificate from one
// of those authorities does not get past the TLS handshake. Pass it to
// Listen. Bad files are refused with ErrInvalidOption.
func TLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: HTTPS needs both a certificate and its key", ErrInvalidOption)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: server certificate: %w", ErrInvalidOption, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: client CA: %w", ErrInvalidOption, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: client CA %s holds no PEM certificate", ErrInvalidOption, clientCAFile)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return cfg, nil
}

// verifiesClients reports whether cfg lets in only clients with a
// certificate it verifies.
func verifiesClients(cfg *tls.Config) bool {
	return cfg != nil && cfg.ClientAuth == tls.RequireAndVerifyClientCert && cfg.ClientCAs != nil
}
