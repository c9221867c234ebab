package console_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/queue"
)

// browserPath finds Chromium. Under CI (CI=true, as .ci/run sets it) a
// missing browser fails the test; elsewhere the test is skipped, naming
// the package to install.
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const how = "install the Debian package chromium (apt-get install -y chromium)"
	if os.Getenv("CI") != "true" {
		t.Skipf("console: browser test skipped: no Chromium found; %s", how)
	}
	t.Fatalf("console: no Chromium found and CI=true: %s; .ci/run installs it", how)
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile, stopped at
// the end of the test, and returns a tab's context.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := browserPath(t)
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1100),
	)
	tab, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		acancel()
	})
	// The first action starts the browser; it runs on the tab's own
	// context (a timeout on it would end the browser with it).
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return tab
}

// do runs steps on the tab, each batch within 30s.
func do(t *testing.T, tab context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates expr in the page.
func eval[T any](t *testing.T, tab context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// poll waits until expr is truthy in the page and returns how long that took.
func poll(t *testing.T, tab context.Context, expr string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(tab, within+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(within))); err != nil {
		t.Fatalf("waiting %v for %s: %v", within, expr, err)
	}
	return time.Since(start)
}

const lockLine = `Array.from(document.querySelectorAll('[data-lock="nightly"] li .value')).map(e => e.textContent)`

// TestBrowser drives the console in a real headless Chromium: a lock's
// holder and waiters in order, a release shown within a second without a
// reload, a dead letter requeued from the page after a confirmation, a
// cross-site POST refused, and a console without actions that has no
// buttons and refuses the endpoint.
func TestBrowser(t *testing.T) {
	tab := newBrowser(t)
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	_, ts, logs := serve(t, srv.Client, console.WithActions())

	holder, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("report-worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"report-worker-2", "report-worker-3"} {
		w, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue(v))
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = w.Lock(ctx) }()
		waitLine(t, ctx, srv.Client, "nightly", v)
	}

	do(t, tab, chromedp.Navigate(ts.URL+"/"))
	poll(t, tab, `document.getElementById('page-state').textContent === 'page: live'`, 10*time.Second)
	line := eval[[]string](t, tab, lockLine)
	if strings.Join(line, ",") != "report-worker-1,report-worker-2,report-worker-3" {
		t.Fatalf("the page shows the lock's line as %q, want the holder then both waiters in order", line)
	}
	if n := eval[int](t, tab, `document.querySelectorAll('[data-lock="nightly"] .holder').length`); n != 1 {
		t.Fatalf("%d holders shown", n)
	}

	// Release: the page follows within a second, with no reload.
	eval[bool](t, tab, `window.__notReloaded = true`)
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // the release is in etcd: the page has a second
	poll(t, tab, lockLine+`.join(",") === "report-worker-2,report-worker-3"`, 5*time.Second)
	took := time.Since(start)
	t.Logf("release shown in the page %v after Unlock returned", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("the page took %v to show the release, want under 1s", took)
	}
	if !eval[bool](t, tab, `window.__notReloaded === true`) {
		t.Fatal("the page was reloaded")
	}

	// A dead letter, requeued from the page after a confirmation.
	q, err := queue.New(srv.Client, "jobs", queue.WithMaxDeliveries(1))
	if err != nil {
		t.Fatal(err)
	}
	consumer := newSession(t, srv.Client)
	dead := deadLetter(t, q, consumer, `{"shard": 7}`)
	requeue := fmt.Sprintf(`[data-queue="jobs"] .deadletters button[data-action="requeue"][data-id="%s"]`, dead)
	poll(t, tab, fmt.Sprintf(`document.querySelector('%s') !== null`, requeue), 5*time.Second)
	// From the keyboard: Enter on the button asks, the dialog opens on
	// Cancel, Escape cancels; nothing happens.
	do(t, tab, chromedp.Focus(chromedp.CSS(requeue)), chromedp.KeyEvent(kb.Enter))
	poll(t, tab, `document.getElementById('confirm').open && document.activeElement.id === 'confirm-cancel'`, 5*time.Second)
	if txt := eval[string](t, tab, `document.getElementById('confirm-text').textContent`); !strings.Contains(txt, dead) {
		t.Fatalf("confirmation %q does not name the item", txt)
	}
	do(t, tab, chromedp.KeyEvent(kb.Escape))
	poll(t, tab, `!document.getElementById('confirm').open`, 5*time.Second)
	// With the mouse, Cancel: nothing happens either.
	do(t, tab, chromedp.Click(chromedp.CSS(requeue)))
	poll(t, tab, `document.getElementById('confirm').open`, 5*time.Second)
	do(t, tab, chromedp.Click(chromedp.CSS(`#confirm-cancel`)))
	poll(t, tab, `!document.getElementById('confirm').open`, 5*time.Second)
	if st, err := queue.Inspect(ctx, srv.Client, q.Name()); err != nil || len(st.Dead) != 1 {
		t.Fatalf("a cancelled requeue changed the queue: %+v %v", st, err)
	}
	// Confirmed: requeued, and the page shows it ready.
	do(t, tab, chromedp.Click(chromedp.CSS(requeue)))
	poll(t, tab, `document.getElementById('confirm').open`, 5*time.Second)
	do(t, tab, chromedp.Click(chromedp.CSS(`#confirm-ok`)))
	poll(t, tab, `document.querySelector('[data-queue="jobs"] .deadletters') === null && document.querySelector('[data-queue="jobs"] .ready').textContent === '1 ready'`, 5*time.Second)
	if st, err := queue.Inspect(ctx, srv.Client, q.Name()); err != nil || len(st.Dead) != 0 || len(st.Ready) != 1 || st.Ready[0].ID != dead {
		t.Fatalf("after the requeue from the page: %+v %v", st, err)
	}
	poll(t, tab, `document.getElementById('toast').textContent.startsWith('done: requeue')`, 5*time.Second)

	// A cross-site POST (a page on another site submitting a form to the
	// console) is refused.
	intake, err := queue.New(srv.Client, "intake", queue.WithMaxDeliveries(1))
	if err != nil {
		t.Fatal(err)
	}
	victim := deadLetter(t, intake, consumer, "victim")
	poll(t, tab, fmt.Sprintf(`document.querySelector('[data-queue="intake"] [data-item="%s"]') !== null`, victim), 5*time.Second)
	evil := evilSite(t, ts.URL+"/action/delete-dead", map[string]string{"queue": "intake", "id": victim})
	do(t, tab, chromedp.Navigate(evil))
	poll(t, tab, `location.pathname === '/action/delete-dead' && document.body.innerText.includes('cross-site request refused')`, 10*time.Second)
	if st, err := queue.Inspect(ctx, srv.Client, intake.Name()); err != nil || len(st.Dead) != 1 || st.Dead[0].ID != victim {
		t.Fatalf("a cross-site POST changed the queue: %+v %v", st, err)
	}
	if !strings.Contains(logs.String(), "cross-site request refused") {
		t.Fatalf("the refusal was not logged: %s", logs.String())
	}

	// A console without actions: no buttons, and the endpoint refuses even
	// a same-origin request carrying the page's token.
	_, plain, _ := serve(t, srv.Client)
	do(t, tab, chromedp.Navigate(plain.URL+"/"))
	poll(t, tab, fmt.Sprintf(`document.querySelector('[data-queue="intake"] [data-item="%s"]') !== null`, victim), 10*time.Second)
	if n := eval[int](t, tab, `document.querySelectorAll('button.action, form.limit').length`); n != 0 {
		t.Fatalf("%d action controls on a console without actions", n)
	}
	status := eval[int](t, tab, fmt.Sprintf(`fetch('action/requeue', {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf]').content},
		body: new URLSearchParams({queue: 'intake', id: '%s'})}).then(r => r.status)`, victim), chromedp.EvalAwaitPromise)
	if status != http.StatusForbidden {
		t.Fatalf("requeue on a console without actions = %d, want 403", status)
	}
	if st, err := queue.Inspect(ctx, srv.Client, intake.Name()); err != nil || len(st.Dead) != 1 {
		t.Fatalf("a refused requeue changed the queue: %+v %v", st, err)
	}
}

// evilSite serves, on another site than the console (localhost rather
// than 127.0.0.1), a page that submits a form to target at once.
func evilSite(t *testing.T, target string, fields map[string]string) string {
	t.Helper()
	var inputs strings.Builder
	for k, v := range fields {
		fmt.Fprintf(&inputs, `<input type="hidden" name="%s" value="%s">`, k, v)
	}
	page := `<!doctype html><html><body><form id="f" method="POST" action="` + target + `">` + inputs.String() +
		`</form><script>document.getElementById('f').submit()</script></body></html>`
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return "http://localhost:" + port + "/"
}
