package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/concurrency"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// logBuffer collects the console's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serve starts a console on client behind a loopback test server; both
// stop at the end of the test.
func serve(t testing.TB, client *clientv3.Client, opts ...console.Option) (*console.Console, *httptest.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts = append([]console.Option{console.WithPollInterval(200 * time.Millisecond),
		console.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)
	c, err := console.New(client, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		ts.Close()
	})
	return c, ts, logs
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// section is the HTML of the page's section id.
func section(page, id string) string {
	start := strings.Index(page, `<section id="`+id+`"`)
	if start < 0 {
		return ""
	}
	end := strings.Index(page[start:], "</section>")
	if end < 0 {
		return page[start:]
	}
	return page[start : start+end]
}

var tags = regexp.MustCompile(`<[^>]*>`)
var spaces = regexp.MustCompile(`\s+`)

// text is html without its tags, spaces collapsed.
func text(html string) string {
	return strings.TrimSpace(spaces.ReplaceAllString(tags.ReplaceAllString(html, " "), " "))
}

// waitSection fetches the page until section id passes ok, and returns it.
func waitSection(t testing.TB, ts *httptest.Server, id string, within time.Duration, ok func(html string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, page := get(t, ts.URL+"/")
		s := section(page, id)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("section %s not as wanted within %v; it reads: %s", id, within, text(s))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsAll(subs ...string) func(string) bool {
	return func(s string) bool {
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				return false
			}
		}
		return true
	}
}

func newSession(t testing.TB, c *clientv3.Client) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(testCtx(t), c, concurrency.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// closeAtEnd closes a recipe value (a Semaphore) at the end of the test,
// whichever Close it has: Close() today, Close(ctx) error with the v1 API.
func closeAtEnd(t testing.TB, v any) {
	t.Cleanup(func() {
		switch c := v.(type) {
		case interface{ Close() }:
			c.Close()
		case interface{ Close(context.Context) error }:
			_ = c.Close(context.Background())
		}
	})
}
