package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// endpoint is one --endpoints entry, checked.
type endpoint struct {
	raw     string
	network string // "tcp" or "unix"
	addr    string // host:port, or the socket's path
	host    string // for TLS server name checks
	tls     bool
}

// parseEndpoint checks an endpoint as the etcd client takes it:
// http(s)://HOST:PORT, unix(s)://PATH or HOST:PORT.
func parseEndpoint(raw string) (endpoint, error) {
	bad := func(why string) (endpoint, error) {
		return endpoint{}, usagef("endpoint %q: %s; want a URL such as http://127.0.0.1:2379", raw, why)
	}
	if !strings.Contains(raw, "://") {
		host, port, err := net.SplitHostPort(raw)
		if err != nil {
			return bad("no scheme and not HOST:PORT")
		}
		if host == "" || !validPort(port) {
			return bad("missing host or port")
		}
		return endpoint{raw: raw, network: "tcp", addr: raw, host: host}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("not a URL")
	}
	switch u.Scheme {
	case "http", "https":
		if u.Hostname() == "" {
			return bad("missing host")
		}
		if !validPort(u.Port()) {
			return bad("missing or bad port")
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return bad("a client URL has no path")
		}
		return endpoint{raw: raw, network: "tcp", addr: u.Host, host: u.Hostname(), tls: u.Scheme == "https"}, nil
	case "unix", "unixs":
		path := u.Host + u.Path
		if path == "" {
			return bad("missing socket path")
		}
		return endpoint{raw: raw, network: "unix", addr: path, host: "localhost", tls: u.Scheme == "unixs"}, nil
	}
	return bad(fmt.Sprintf("unknown scheme %q", u.Scheme))
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// probe connects to the endpoint (and makes a TLS handshake with cfg when
// it is https) to learn early why it cannot be reached. A nil error says
// only that a connection (and handshake) succeeded.
func probe(ctx context.Context, ep endpoint, cfg *tls.Config) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, ep.network, ep.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !ep.tls {
		return nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg != nil {
		c = cfg.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = ep.host
	}
	c.NextProtos = []string{"h2"}
	tc := tls.Client(conn, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		return &tlsError{err}
	}
	return nil
}

// tlsError is a failed TLS handshake.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "TLS handshake failed: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// definite reports whether a probe's error says the endpoint cannot be
// reached as configured (refused, unknown host, missing socket, TLS), as
// opposed to not answering yet (a timeout, a dropped packet), which is worth
// waiting for until the dial timeout.
func definite(err error) (string, bool) {
	var dnsErr *net.DNSError
	var tlsErr *tlsError
	var recErr tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr *tls.CertificateVerificationError
	switch {
	case err == nil:
		return "", false
	case errors.As(err, &dnsErr) && !dnsErr.IsTimeout && !dnsErr.IsTemporary:
		return fmt.Sprintf("cannot resolve host %q", dnsErr.Name), true
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (is etcd running there?)", true
	case errors.Is(err, syscall.ENOENT):
		return "no such socket", true
	case errors.As(err, &recErr):
		return "TLS handshake failed: the server does not speak TLS (try http://)", true
	case errors.As(err, &unknownCA), errors.As(err, &certErr) && errors.As(certErr.Err, &unknownCA):
		return "TLS handshake failed: certificate signed by an unknown authority (pass --cacert)", true
	case errors.As(err, &hostErr):
		return "TLS handshake failed: " + hostErr.Error(), true
	case errors.As(err, &tlsErr) && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return "TLS handshake failed: the server closed the connection (does it serve TLS? try http://)", true
	case errors.As(err, &tlsErr):
		return tlsErr.Error(), true
	}
	return "", false
}
