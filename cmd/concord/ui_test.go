package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
)

// consoleURL reads the console's address from a ui or dev --ui run's output.
func consoleURL(t *testing.T, out *syncBuffer) string {
	t.Helper()
	out.waitFor(t, "concord console at ")
	_, after, _ := strings.Cut(out.String(), "concord console at ")
	url, _, _ := strings.Cut(after, " ")
	return strings.TrimSuffix(url, "?token=…")
}

func getPage(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUI(t *testing.T) {
	_, ep := server(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer http.DefaultClient.CloseIdleConnections()
	if r := cli(t, ctx, "ui", ep, "--listen", "0.0.0.0:0"); r.code != exitUsage || !strings.Contains(r.errOut, "--ui-token") {
		t.Fatalf("ui on all interfaces without a token: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "ui", ep, "--listen", "nonsense"); r.code != exitUsage {
		t.Fatalf("ui --listen nonsense: exit %d, stderr:\n%s", r.code, r.errOut)
	}

	out, errOut, done := cliAsync(ctx, "ui", ep, "--listen", "127.0.0.1:0", "--allow-actions")
	url := consoleURL(t, out)
	if code, page := getPage(t, url); code != http.StatusOK || !strings.Contains(page, "concord console") || !strings.Contains(page, "actions on") {
		t.Fatalf("GET %s = %d", url, code)
	}
	cancel()
	if code := waitCode(t, done, errOut); code != 0 {
		t.Fatalf("ui: exit %d, stderr:\n%s", code, errOut.String())
	}

	// With a token it may listen on every interface; the token is not printed.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	out, errOut, done = cliAsync(ctx, "ui", ep, "--listen", "0.0.0.0:0", "--ui-token", "s3cret")
	url = consoleURL(t, out)
	if strings.Contains(out.String(), "s3cret") {
		t.Fatalf("the token was printed: %s", out.String())
	}
	_, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
	local := "http://127.0.0.1:" + port + "/"
	if code, _ := getPage(t, local); code != http.StatusUnauthorized {
		t.Fatalf("GET without the token = %d, want 401", code)
	}
	// A browser keeps the cookie the token visit sets and follows the redirect.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.Get(local + "?token=s3cret")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	browser.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.RawQuery != "" {
		t.Fatalf("GET with the token = %d at %s, want 200 at the URL without it", resp.StatusCode, resp.Request.URL)
	}
	cancel()
	if code := waitCode(t, done, errOut); code != 0 {
		t.Fatalf("ui: exit %d, stderr:\n%s", code, errOut.String())
	}
}

func TestDevUI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer http.DefaultClient.CloseIdleConnections()
	out, errOut, done := cliAsync(ctx, "dev", "--ui", "--ui-listen", "127.0.0.1:0")
	out.waitFor(t, "ETCD_ENDPOINTS=")
	url := consoleURL(t, out)
	code, page := getPage(t, url)
	if code != http.StatusOK || !strings.Contains(page, "connected to etcd") || !strings.Contains(page, "actions off") {
		t.Fatalf("GET %s = %d:\n%s", url, code, page)
	}
	cancel()
	if code := waitCode(t, done, errOut); code != 0 {
		t.Fatalf("dev --ui: exit %d, stderr:\n%s", code, errOut.String())
	}
}

// TestUIClientCertificates: concord ui over HTTPS with client certificates
// required, next to an etcd that itself needs TLS client certificates.
// Client certificates stand in for --ui-token on every interface; a
// browser without one, or with one from another CA, is refused in the
// handshake; the page served to a good one shows nothing of the etcd
// credentials the console was given.
func TestUIClientCertificates(t *testing.T) {
	etcdTLS, err := embedtest.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	uiTLS, err := embedtest.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := embedtest.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.WithTLS(etcdTLS))
	etcdFlags := []string{"--endpoints=" + strings.Join(srv.Endpoints, ","), "--cacert", etcdTLS.CAFile,
		"--cert", etcdTLS.ClientCertFile, "--key", etcdTLS.ClientKeyFile}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ui := func(args ...string) []string { return append(append([]string{"ui"}, etcdFlags...), args...) }
	serverOnly := []string{"--ui-tls-cert", uiTLS.ServerCertFile, "--ui-tls-key", uiTLS.ServerKeyFile}
	for name, args := range map[string][]string{
		"HTTPS on all interfaces without a client CA nor a token": append([]string{"--listen", "0.0.0.0:0"}, serverOnly...),
		"--ui-client-ca without a server certificate":             {"--ui-client-ca", uiTLS.CAFile},
		"--ui-tls-cert without its key":                           {"--ui-tls-cert", uiTLS.ServerCertFile},
	} {
		if r := cli(t, ctx, ui(args...)...); r.code != exitUsage {
			t.Errorf("ui with %s: exit %d, want %d; stderr:\n%s", name, r.code, exitUsage, r.errOut)
		}
	}

	out, errOut, done := cliAsync(ctx, ui(append([]string{"--listen", "0.0.0.0:0", "--ui-client-ca", uiTLS.CAFile}, serverOnly...)...)...)
	url := consoleURL(t, out)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("the console's URL %s is not https", url)
	}
	_, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/"))
	local := "https://127.0.0.1:" + port + "/"
	client := func(certFile, keyFile string) *http.Client {
		pem, err := os.ReadFile(uiTLS.CAFile)
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
	for name, c := range map[string]*http.Client{
		"no client certificate":         client("", ""),
		"a certificate from another CA": client(other.ClientCertFile, other.ClientKeyFile),
		"etcd's client certificate":     client(etcdTLS.ClientCertFile, etcdTLS.ClientKeyFile),
	} {
		if resp, err := c.Get(local); err == nil {
			resp.Body.Close()
			t.Fatalf("GET with %s = %d, want the TLS handshake refused", name, resp.StatusCode)
		}
	}
	resp, err := client(uiTLS.ClientCertFile, uiTLS.ClientKeyFile).Get(local)
	if err != nil {
		t.Fatalf("GET with the UI CA's client certificate: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "connected to etcd") {
		t.Fatalf("GET with a good client certificate = %d:\n%s", resp.StatusCode, page)
	}
	for _, secret := range []string{etcdTLS.ClientKeyFile, etcdTLS.ClientCertFile, etcdTLS.CAFile, uiTLS.ServerKeyFile, "PRIVATE KEY"} {
		if strings.Contains(string(page), secret) {
			t.Fatalf("the page shows %q", secret)
		}
	}
	cancel()
	if code := waitCode(t, done, errOut); code != 0 {
		t.Fatalf("ui: exit %d, stderr:\n%s", code, errOut.String())
	}
}
