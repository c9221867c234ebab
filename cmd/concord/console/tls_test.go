package console_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

// httpsClient trusts ca for the server's certificate and presents the
// client certificate in certFile/keyFile, if any.
func httpsClient(t *testing.T, ca, certFile, keyFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: roots}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestClientCertificates serves the console over HTTPS with client
// certificates required: a real Go HTTPS client without a certificate, or
// with one from another authority, does not get past the handshake; with
// one from the configured authority it gets the page. Client certificates
// stand in for the UI token on a non-loopback address; a certificate
// without a client CA does not.
func TestClientCertificates(t *testing.T) {
	ours, err := embedtest.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := embedtest.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mtls, err := console.TLSConfig(ours.ServerCertFile, ours.ServerKeyFile, ours.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	serverOnly, err := console.TLSConfig(ours.ServerCertFile, ours.ServerKeyFile, "")
	if err != nil {
		t.Fatal(err)
	}

	// Which configurations may listen beyond loopback (0.0.0.0 is bound
	// and closed at once; nothing dials it).
	for name, cfg := range map[string]*tls.Config{"no TLS": nil, "HTTPS without a client CA": serverOnly} {
		if l, err := console.Listen("0.0.0.0:0", "", cfg); !errors.Is(err, console.ErrNeedToken) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Listen on all interfaces, %s, no token = %v, want ErrNeedToken", name, err)
		}
	}
	l, err := console.Listen("0.0.0.0:0", "", mtls)
	if err != nil {
		t.Fatalf("Listen on all interfaces with client certificates required = %v", err)
	}
	l.Close()
	for name, files := range map[string][3]string{
		"a key without its certificate": {"", ours.ServerKeyFile, ""},
		"a missing certificate file":    {ours.ServerCertFile + ".missing", ours.ServerKeyFile, ""},
		"a client CA that is not PEM":   {ours.ServerCertFile, ours.ServerKeyFile, os.Args[0]},
		"a missing client CA":           {ours.ServerCertFile, ours.ServerKeyFile, ours.CAFile + ".missing"},
	} {
		if _, err := console.TLSConfig(files[0], files[1], files[2]); !errors.Is(err, console.ErrInvalidOption) {
			t.Errorf("TLSConfig with %s = %v, want ErrInvalidOption", name, err)
		}
	}

	srv := embedtest.Start(t)
	ctx := testCtx(t)
	m, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("report-worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	c, err := console.New(srv.Client, console.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	l, err = console.Listen("127.0.0.1:0", "", mtls)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.Serve(sctx, l) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	url := "https://" + l.Addr().String() + "/"

	for name, client := range map[string]*http.Client{
		"no client certificate":         httpsClient(t, ours.CAFile, "", ""),
		"a certificate from another CA": httpsClient(t, ours.CAFile, theirs.ClientCertFile, theirs.ClientKeyFile),
		"our CA's server certificate":   httpsClient(t, ours.CAFile, ours.ServerCertFile, ours.ServerKeyFile), // not for client auth
	} {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s with %s = %d, want the handshake refused", url, name, resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "tls") && !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("GET with %s failed, but not in TLS: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	// Plain HTTP on the HTTPS port gets no page either.
	if resp, err := http.Get("http://" + l.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP got the page")
		}
	}

	good := httpsClient(t, ours.CAFile, ours.ClientCertFile, ours.ClientKeyFile)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := good.Get(url)
		if err != nil {
			t.Fatalf("GET with a certificate from the client CA: %v", err)
		}
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET with a good certificate = %d", resp.StatusCode)
		}
		if strings.Contains(b.String(), "report-worker-1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page over HTTPS does not show the lock's holder:\n%s", text(b.String()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "TLS handshake error") {
		t.Errorf("refused handshakes were not logged: %s", logs.String())
	}
}
