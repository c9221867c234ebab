package console_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
)

var csrfMeta = regexp.MustCompile(`<meta name="csrf" content="([^"]+)">`)

// pageToken loads the page and returns its CSRF token.
func pageToken(t *testing.T, ts *httptest.Server) string {
	t.Helper()
	_, page := get(t, ts.URL+"/")
	m := csrfMeta.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("page has no CSRF token")
	}
	return m[1]
}

// post sends an action as the page's script does, with extra headers.
func post(t *testing.T, ts *httptest.Server, action string, form url.Values, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/action/"+action, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m struct{ Message string }
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m.Message
}

// deadLetter makes one dead letter in queue name and returns its id.
func deadLetter(t *testing.T, q *queue.Queue, s *concurrency.Session, payload string) string {
	t.Helper()
	ctx := testCtx(t)
	id, err := q.Enqueue(ctx, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	c, err := q.Consumer(s).TryClaim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Consumer(s).TryClaim(ctx); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("claim = %v, want ErrEmpty", err)
	}
	return id
}

func TestActionsOffByDefault(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	_, ts, logs := serve(t, srv.Client)
	s := newSession(t, srv.Client)
	q, _ := queue.New(srv.Client, "jobs", queue.WithMaxDeliveries(1))
	id := deadLetter(t, q, s, "poison")
	m, _ := lock.NewMutex(s, "nightly")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	sem, err := semaphore.New(s, "upgrades", 2)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, sem)
	if _, err := sem.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	waitSection(t, ts, "locks", 10*time.Second, containsAll("nightly"))
	waitSection(t, ts, "queues", 10*time.Second, containsAll(id))
	waitSection(t, ts, "semaphores", 10*time.Second, containsAll("upgrades"))
	waitSection(t, ts, "sessions", 10*time.Second, containsAll(leaseHex(s.Lease())))
	_, page := get(t, ts.URL+"/")
	if strings.Contains(page, `class="action`) || strings.Contains(page, "Requeue") || strings.Contains(page, "Revoke") {
		t.Fatalf("action buttons on a console without actions: %s", text(page))
	}
	tok := pageToken(t, ts)
	for action, form := range map[string]url.Values{
		"requeue": {"queue": {"jobs"}, "id": {id}},
		"revoke":  {"lease": {leaseHex(s.Lease())}},
		"limit":   {"semaphore": {"upgrades"}, "limit": {"5"}},
	} {
		if code, msg := post(t, ts, action, form, map[string]string{"X-CSRF-Token": tok}); code != http.StatusForbidden {
			t.Fatalf("%s with actions off = %d %s, want 403", action, code, msg)
		}
	}
	if st, err := queue.Inspect(ctx, srv.Client, q.Name()); err != nil || len(st.Dead) != 1 {
		t.Fatalf("dead letter changed by a refused action: %+v %v", st, err)
	}
	if !strings.Contains(logs.String(), "actions are off") {
		t.Fatalf("refusals not logged: %s", logs.String())
	}
}

func TestActions(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	_, ts, logs := serve(t, srv.Client, console.WithActions())
	s := newSession(t, srv.Client)
	q, _ := queue.New(srv.Client, "jobs", queue.WithMaxDeliveries(1))
	requeue := deadLetter(t, q, s, "requeue me")
	drop := deadLetter(t, q, s, "drop me")
	sem, err := semaphore.New(newSession(t, srv.Client), "upgrades", 1, semaphore.WithFollowLimit())
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, sem)
	if _, err := sem.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	victim := newSession(t, srv.Client)
	m, _ := lock.NewMutex(victim, "nightly", lock.WithValue("stuck-worker"))
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waitSection(t, ts, "queues", 10*time.Second, containsAll(requeue, drop, "Requeue", "Delete"))
	waitSection(t, ts, "sessions", 10*time.Second, containsAll("Revoke lease", leaseHex(victim.Lease())))
	waitSection(t, ts, "semaphores", 10*time.Second, containsAll("Set limit"))
	tok := pageToken(t, ts)
	ok := map[string]string{"X-CSRF-Token": tok, "Origin": ts.URL, "Sec-Fetch-Site": "same-origin"}

	// Refused: no token, a forged token, another origin, a cross-site fetch.
	form := url.Values{"queue": {"jobs"}, "id": {requeue}}
	for name, h := range map[string]map[string]string{
		"no token":               {},
		"forged token":           {"X-CSRF-Token": strings.Repeat("0", 32) + "." + strings.Repeat("0", 64)},
		"other origin":           {"X-CSRF-Token": tok, "Origin": "http://evil.example"},
		"cross-site":             {"X-CSRF-Token": tok, "Sec-Fetch-Site": "cross-site"},
		"same-site (not origin)": {"X-CSRF-Token": tok, "Sec-Fetch-Site": "same-site"},
	} {
		if code, msg := post(t, ts, "requeue", form, h); code != http.StatusForbidden {
			t.Fatalf("requeue with %s = %d %s, want 403", name, code, msg)
		}
	}
	if st, _ := queue.Inspect(ctx, srv.Client, q.Name()); len(st.Dead) != 2 {
		t.Fatalf("a refused request changed the queue: %+v", st)
	}
	if code, _ := get(t, ts.URL+"/action/requeue?queue=jobs&id="+requeue); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET of an action = %d, want 405", code)
	}

	// Requeue and delete a dead letter.
	if code, msg := post(t, ts, "requeue", form, ok); code != http.StatusOK {
		t.Fatalf("requeue = %d %s", code, msg)
	}
	if code, msg := post(t, ts, "delete-dead", url.Values{"queue": {"jobs"}, "id": {drop}}, ok); code != http.StatusOK {
		t.Fatalf("delete-dead = %d %s", code, msg)
	}
	st, err := queue.Inspect(ctx, srv.Client, q.Name())
	if err != nil || len(st.Dead) != 0 || len(st.Ready) != 1 || st.Ready[0].ID != requeue {
		t.Fatalf("after requeue and delete: %+v %v", st, err)
	}
	if code, _ := post(t, ts, "requeue", form, ok); code != http.StatusNotFound {
		t.Fatalf("requeue of a gone dead letter = %d, want 404", code)
	}
	if code, _ := post(t, ts, "requeue", url.Values{"queue": {"elsewhere"}, "id": {requeue}}, ok); code != http.StatusNotFound {
		t.Fatalf("requeue in a queue the console does not show = %d, want 404", code)
	}

	// Change a semaphore's limit.
	if code, _ := post(t, ts, "limit", url.Values{"semaphore": {"upgrades"}, "limit": {"0"}}, ok); code != http.StatusBadRequest {
		t.Fatalf("limit 0 = %d, want 400", code)
	}
	if code, msg := post(t, ts, "limit", url.Values{"semaphore": {"upgrades"}, "limit": {"3"}}, ok); code != http.StatusOK {
		t.Fatalf("limit = %d %s", code, msg)
	}
	if ss, err := semaphore.Inspect(ctx, srv.Client, "upgrades"); err != nil || ss.Limit != 3 {
		t.Fatalf("limit after the action: %+v %v", ss, err)
	}
	waitSection(t, ts, "semaphores", 10*time.Second, containsAll("1 of 3 permits held"))

	// Revoke a stuck holder's lease: its lock is released and its session learns it.
	if code, _ := post(t, ts, "revoke", url.Values{"lease": {"123abc"}}, ok); code != http.StatusNotFound {
		t.Fatalf("revoke of a lease the console does not show = %d, want 404", code)
	}
	if code, msg := post(t, ts, "revoke", url.Values{"lease": {leaseHex(victim.Lease())}}, ok); code != http.StatusOK {
		t.Fatalf("revoke = %d %s", code, msg)
	}
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the lock's holder did not learn of the revoked lease")
	}
	waitSection(t, ts, "locks", 10*time.Second, containsAll("No locks."))
	for _, want := range []string{"action=requeue", "action=delete-dead", "action=limit", "action=revoke", "console action refused"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
