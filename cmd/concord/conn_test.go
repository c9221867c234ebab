package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort is a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// Endpoint problems are told apart and reported at once: a malformed URL
// is a usage error; a refused connection and a TLS mismatch say so without
// waiting out --dial-timeout.
func TestEndpointProblems(t *testing.T) {
	srv, _ := server(t)
	plain := strings.TrimPrefix(srv.Endpoints[0], "http://")
	ctx := context.Background()
	for _, tc := range []struct {
		endpoints string
		code      int
		want      string
	}{
		{"foo", exitUsage, `endpoint "foo": no scheme and not HOST:PORT`},
		{"https://", exitUsage, `endpoint "https://": missing host`},
		{"http://127.0.0.1", exitUsage, "missing or bad port"},
		{"ftp://127.0.0.1:21", exitUsage, `unknown scheme "ftp"`},
		{"http://127.0.0.1:2379/v3", exitUsage, "no path"},
		{fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), exitUnreachable, "connection refused"},
		{"https://" + plain, exitUnreachable, "TLS handshake failed"},
		{"unix:///nonexistent/etcd.sock", exitUnreachable, "no such socket"},
	} {
		start := time.Now()
		r := cli(t, ctx, "status", "--endpoints", tc.endpoints, "--dial-timeout", "20s")
		took := time.Since(start)
		if r.code != tc.code || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("--endpoints %s: exit %d, want %d with %q; stderr:\n%s", tc.endpoints, r.code, tc.code, tc.want, r.errOut)
		}
		// Before: every case waited the whole dial timeout.
		if took > 5*time.Second {
			t.Errorf("--endpoints %s: took %v, want an answer well before --dial-timeout 20s", tc.endpoints, took)
		}
	}
	// One good endpoint among bad ones is enough.
	r := cli(t, ctx, "status", "--endpoints", fmt.Sprintf("http://127.0.0.1:%d,%s", freePort(t), srv.Endpoints[0]))
	if r.code != 0 {
		t.Errorf("one live endpoint of two: exit %d, stderr:\n%s", r.code, r.errOut)
	}
}

// The causes probe errors map to.
func TestDefiniteCauses(t *testing.T) {
	for _, tc := range []struct {
		err      error
		definite bool
		want     string
	}{
		{&net.DNSError{Name: "etcd.example", Err: "no such host", IsNotFound: true}, true, `cannot resolve host "etcd.example"`},
		{&net.DNSError{Name: "etcd.example", Err: "i/o timeout", IsTimeout: true}, false, ""},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true, "connection refused"},
		{&tlsError{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}}, true, "does not speak TLS"},
		{&net.OpError{Op: "dial", Err: syscall.ETIMEDOUT}, false, ""},
	} {
		why, ok := definite(tc.err)
		if ok != tc.definite || !strings.Contains(why, tc.want) {
			t.Errorf("%v: %q %v, want %q %v", tc.err, why, ok, tc.want, tc.definite)
		}
	}
}

// The connection flags fall back on the environment, as etcdctl's do, and
// the command line wins over it.
func TestEnvDefaults(t *testing.T) {
	srv, _ := server(t)
	ctx := context.Background()
	t.Setenv("ETCD_ENDPOINTS", "")
	t.Setenv("ETCDCTL_ENDPOINTS", srv.Endpoints[0])
	t.Setenv("ETCDCTL_DIAL_TIMEOUT", "2s")
	if r := cli(t, ctx, "status"); r.code != 0 {
		t.Errorf("ETCDCTL_ENDPOINTS: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	t.Setenv("ETCDCTL_DIAL_TIMEOUT", "soon")
	if r := cli(t, ctx, "status"); r.code != exitUsage || !strings.Contains(r.errOut, "ETCDCTL_DIAL_TIMEOUT") {
		t.Errorf("bad ETCDCTL_DIAL_TIMEOUT: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "status", "--dial-timeout", "2s"); r.code != 0 {
		t.Errorf("--dial-timeout over a bad ETCDCTL_DIAL_TIMEOUT: exit %d, stderr:\n%s", r.code, r.errOut)
	}
}
