package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
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
