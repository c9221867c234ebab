package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

// events reads a page's event stream.
type events struct {
	cancel context.CancelFunc
	resp   *http.Response
	c      chan pushed
	done   chan struct{}
}

type pushed struct{ id, html string }

func openEvents(t testing.TB, ts *httptest.Server) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		cancel()
		resp.Body.Close()
		t.Fatalf("events Content-Type %q", ct)
	}
	e := &events{cancel: cancel, resp: resp, c: make(chan pushed, 1024), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		defer close(e.c)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && name == "section":
				var m struct{ ID, HTML string }
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m) == nil {
					select {
					case e.c <- pushed{m.ID, m.HTML}:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return e
}

func (e *events) close() {
	e.cancel()
	e.resp.Body.Close()
	<-e.done
}

// next waits for a push of section id that passes ok.
func (e *events) next(t testing.TB, id string, within time.Duration, ok func(string) bool) string {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case s, open := <-e.c:
			if !open {
				t.Fatalf("event stream ended waiting for %s", id)
			}
			if s.id == id && ok(s.html) {
				return s.html
			}
		case <-timeout:
			t.Fatalf("no push of section %s as wanted within %v", id, within)
		}
	}
}

// TestChangePushedWithinASecond: a change in etcd reaches an open page's
// event stream within a second, with no request from the page.
func TestChangePushedWithinASecond(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	_, ts, _ := serve(t, srv.Client)
	evs := openEvents(t, ts)
	defer evs.close()
	// Every section comes first, so a page that reconnects catches up.
	for _, id := range []string{"cluster", "sessions", "locks", "elections", "semaphores", "queues", "services", "topics", "checkpoints"} {
		evs.next(t, id, 10*time.Second, func(string) bool { return true })
	}
	m, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("worker-7"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		evs.next(t, "locks", 5*time.Second, containsAll("worker-7"))
		held := time.Since(start)
		start = time.Now()
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		evs.next(t, "locks", 5*time.Second, containsAll("No locks."))
		freed := time.Since(start)
		t.Logf("lock taken: pushed after %v; released: pushed after %v", held, freed)
		if held > time.Second || freed > time.Second {
			t.Fatalf("a change took %v / %v to reach the page, want under 1s", held, freed)
		}
	}
}
