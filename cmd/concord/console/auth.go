package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// tokenCookie carries the UI token after a visit with ?token=.
const tokenCookie = "concord_ui_token"

// Listen opens addr for the console, serving HTTPS when tlsCfg is not nil
// (see TLSConfig). An address that is not loopback (an IP that is not
// 127.0.0.0/8 or ::1, a host name other than localhost, or no host at all)
// is refused with ErrNeedToken unless token is set (pass the same token to
// WithToken) or tlsCfg requires and verifies client certificates: the page
// shows who holds what in the cluster, and its actions change it.
func Listen(addr, token string, tlsCfg *tls.Config) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %w", ErrInvalidOption, addr, err)
	}
	if !loopback(host) && token == "" && !verifiesClients(tlsCfg) {
		return nil, fmt.Errorf("%w: %s", ErrNeedToken, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil || tlsCfg == nil {
		return l, err
	}
	return tls.NewListener(l, tlsCfg), nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Serve serves the console on l until ctx ends, then ends the pages'
// event streams and shuts the server down (waiting at most 5s for
// requests in flight). It does not close the Console.
func (c *Console) Serve(ctx context.Context, l net.Listener) error {
	// Refused TLS handshakes (no client certificate, an unknown authority)
	// are logged with the console's logger.
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(c.cfg.logger.Handler(), slog.LevelWarn)}
	srv.RegisterOnShutdown(c.hub.dropAll)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// authorized checks the UI token, if one is required, and answers 401
// when it is missing. A page opened with ?token= gets it as a cookie
// (HttpOnly, SameSite=Strict) and is sent to the same URL without it, so
// the token does not stay in the address bar or the history.
func (c *Console) authorized(w http.ResponseWriter, r *http.Request) bool {
	want := c.cfg.token
	if want == "" {
		return true
	}
	same := func(got string) bool { return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 }
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && same(got) {
		return true
	}
	if ck, err := r.Cookie(tokenCookie); err == nil && same(ck.Value) {
		return true
	}
	if q := r.URL.Query(); r.Method == http.MethodGet && q.Has("token") && same(q.Get("token")) {
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: want, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		q.Del("token")
		u := *r.URL
		u.RawQuery = q.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return false
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="concord console"`)
	http.Error(w, "concord console: this console needs its UI token: open it once with ?token=TOKEN", http.StatusUnauthorized)
	return false
}

// newCSRF returns a token for one page: a random nonce and its MAC under
// the Console's secret, which only pages served by this Console carry.
func (c *Console) newCSRF() string {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	return hex.EncodeToString(nonce) + "." + hex.EncodeToString(c.mac(nonce))
}

func (c *Console) mac(nonce []byte) []byte {
	m := hmac.New(sha256.New, c.secret)
	m.Write(nonce)
	return m.Sum(nil)
}

func (c *Console) validCSRF(tok string) bool {
	n, sum, ok := strings.Cut(tok, ".")
	if !ok {
		return false
	}
	nonce, err1 := hex.DecodeString(n)
	got, err2 := hex.DecodeString(sum)
	return err1 == nil && err2 == nil && len(nonce) == 16 && hmac.Equal(got, c.mac(nonce))
}

// errCrossSite: the request did not come from one of this console's pages.
var errCrossSite = errors.New("cross-site request refused")

// sameOrigin refuses a request a browser marks as coming from another
// site (Sec-Fetch-Site), or whose Origin is not this server, or that lacks
// a page's CSRF token.
func (c *Console) sameOrigin(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("%w: Sec-Fetch-Site %s", errCrossSite, site)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if origin != scheme+"://"+r.Host {
			return fmt.Errorf("%w: Origin %s", errCrossSite, origin)
		}
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	if !c.validCSRF(tok) {
		return fmt.Errorf("%w: missing or invalid page token", errCrossSite)
	}
	return nil
}
