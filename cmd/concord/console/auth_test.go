package console_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/embedtest"
)

func TestListenLoopbackOnlyWithoutToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		if l, err := console.Listen(addr, "", nil); !errors.Is(err, console.ErrNeedToken) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("Listen(%q) without a token = %v, want ErrNeedToken", addr, err)
		}
	}
	if _, err := console.Listen("no-port", "", nil); !errors.Is(err, console.ErrInvalidOption) {
		t.Fatalf("Listen of a malformed address = %v, want ErrInvalidOption", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		l, err := console.Listen(addr, "", nil)
		if err != nil {
			t.Fatalf("Listen(%q) = %v", addr, err)
		}
		l.Close()
	}
	// A token allows any interface (0.0.0.0 is bound, but only loopback is dialled here).
	l, err := console.Listen("0.0.0.0:0", "s3cret", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func TestTokenRequired(t *testing.T) {
	srv := embedtest.Start(t)
	_, ts, _ := serve(t, srv.Client, console.WithToken("s3cret"))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer noRedirect.CloseIdleConnections()
	for _, path := range []string{"/", "/events", "/assets/console.js", "/?token=wrong"} {
		resp, err := noRedirect.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET %s without the token = %d, want 401", path, resp.StatusCode)
		}
	}
	// ?token= sets a cookie and sends the page to the URL without it.
	resp, err := noRedirect.Get(ts.URL + "/?token=s3cret")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("GET /?token= = %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "concord_ui_token" {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("token cookie = %+v, want HttpOnly SameSite=Strict", ck)
	}
	for name, set := range map[string]func(*http.Request){
		"cookie": func(r *http.Request) { r.AddCookie(ck) },
		"bearer": func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret") },
	} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
		set(req)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET / with the token as %s = %d", name, resp.StatusCode)
		}
	}
}

func TestServeAndSecurityHeaders(t *testing.T) {
	srv := embedtest.Start(t)
	c, err := console.New(srv.Client)
	if err != nil {
		t.Fatal(err)
	}
	l, err := console.Listen("127.0.0.1:0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.Serve(ctx, l) }()
	url := "http://" + l.Addr().String()
	code, page := get(t, url+"/")
	if code != 200 || !strings.Contains(page, "concord console") {
		t.Fatalf("GET / = %d", code)
	}
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("security headers: %v", resp.Header)
	}
	// An open event stream does not hold the shutdown up.
	evs, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer evs.Body.Close()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if err := c.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(cctx); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestNewRefusesBadOptions(t *testing.T) {
	if _, err := console.New(nil); !errors.Is(err, console.ErrInvalidOption) {
		t.Fatalf("New(nil) = %v", err)
	}
	srv := embedtest.Start(t)
	if _, err := console.New(srv.Client, console.WithPollInterval(0)); !errors.Is(err, console.ErrInvalidOption) {
		t.Fatalf("New with a zero poll interval = %v", err)
	}
}
