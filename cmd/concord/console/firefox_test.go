package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/queue"
	"github.com/gorilla/websocket"
)

// firefoxPath finds Firefox. Under CI (CI=true, as .ci/run sets it, and
// .ci/run installs firefox-esr) a missing browser fails the test;
// elsewhere the test is skipped, naming the package to install.
func firefoxPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const how = "install the Debian package firefox-esr (apt-get install -y firefox-esr)"
	if os.Getenv("CI") != "true" {
		t.Skipf("console: Firefox test skipped: no Firefox found; %s", how)
	}
	t.Fatalf("console: no Firefox found and CI=true: %s; .ci/run installs it", how)
	return ""
}

// bidi is a WebDriver BiDi session with a headless Firefox this test
// started: the W3C protocol Firefox speaks over a WebSocket when started
// with --remote-debugging-port. Only what the test needs: one tab,
// navigate, evaluate. Commands are sent one at a time; the test subscribes
// to no events, so every message read answers the command sent.
type bidi struct {
	ws   *websocket.Conn
	next int
	tab  string // the browsing context
}

// startFirefox starts a headless Firefox with a fresh profile on a free
// loopback port, opens a BiDi session and returns it with a tab. The
// browser (its whole process group) is stopped at the end of the test.
func startFirefox(t *testing.T) *bidi {
	t.Helper()
	path := firefoxPath(t)
	cmd := exec.Command(path, "-headless", "--remote-debugging-port", "0", "-profile", t.TempDir(), "--no-remote", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its content processes go with it
	cmd.Env = append(os.Environ(), "MOZ_CRASHREPORTER_DISABLE=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	var log strings.Builder // Firefox's stderr until it listens, for the failure message
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if _, ws, ok := strings.Cut(line, "WebDriver BiDi listening on "); ok {
				addr <- strings.TrimSpace(ws)
			} else if len(addr) == 0 {
				log.WriteString(line + "\n")
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	b := &bidi{}
	t.Cleanup(func() {
		if b.ws != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = b.call(ctx, "browser.close", map[string]any{}, nil)
			cancel()
			_ = b.ws.Close()
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		// Content processes that outlived the parent, if any.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	var url string
	select {
	case url = <-addr:
	case <-exited:
		t.Fatalf("%s exited before listening for WebDriver BiDi:\n%s", path, log.String())
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		t.Fatalf("%s did not listen for WebDriver BiDi within 60s:\n%s", path, log.String())
	}
	// No Origin header: Firefox refuses WebSocket requests that carry one
	// unless told to allow that origin.
	ws, _, err := websocket.DefaultDialer.Dial(url+"/session", nil)
	if err != nil {
		t.Fatalf("connecting to Firefox's BiDi at %s: %v", url, err)
	}
	b.ws = ws
	ctx := testCtx(t)
	if err := b.call(ctx, "session.new", map[string]any{"capabilities": map[string]any{}}, nil); err != nil {
		t.Fatal(err)
	}
	var tab struct {
		Context string `json:"context"`
	}
	if err := b.call(ctx, "browsingContext.create", map[string]any{"type": "tab"}, &tab); err != nil {
		t.Fatal(err)
	}
	b.tab = tab.Context
	return b
}

// call sends one command and decodes its result into result (if not nil).
func (b *bidi) call(ctx context.Context, method string, params, result any) error {
	b.next++
	id := b.next
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = b.ws.SetWriteDeadline(deadline)
	_ = b.ws.SetReadDeadline(deadline)
	if err := b.ws.WriteJSON(map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return fmt.Errorf("bidi %s: %w", method, err)
	}
	for {
		var msg struct {
			ID      *int            `json:"id"`
			Type    string          `json:"type"`
			Error   string          `json:"error"`
			Message string          `json:"message"`
			Result  json.RawMessage `json:"result"`
		}
		if err := b.ws.ReadJSON(&msg); err != nil {
			return fmt.Errorf("bidi %s: %w", method, err)
		}
		if msg.ID == nil || *msg.ID != id {
			continue // an event, or the answer to a command given up on
		}
		if msg.Type == "error" {
			return fmt.Errorf("bidi %s: %s: %s", method, msg.Error, msg.Message)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(msg.Result, result)
	}
}

// navigate loads url in the tab and waits until the page has loaded.
func (b *bidi) navigate(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.call(ctx, "browsingContext.navigate", map[string]any{"context": b.tab, "url": url, "wait": "complete"}, nil); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates expr in the page and returns its value as JSON: the
// expression is wrapped in JSON.stringify, so any value comes back as one
// string.
func (b *bidi) eval(t *testing.T, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res struct {
		Type   string `json:"type"`
		Result struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	err := b.call(ctx, "script.evaluate", map[string]any{"expression": "JSON.stringify(" + expr + ")",
		"target": map[string]any{"context": b.tab}, "awaitPromise": false}, &res)
	if err != nil {
		t.Fatal(err)
	}
	if res.Type != "success" {
		t.Fatalf("evaluating %s in Firefox: %s", expr, res.ExceptionDetails.Text)
	}
	return res.Result.Value
}

// poll evaluates expr until it is true, at most within, and returns how
// long that took.
func (b *bidi) poll(t *testing.T, expr string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for b.eval(t, expr) != "true" {
		if time.Since(start) > within {
			t.Fatalf("Firefox: waited %v for %s", within, expr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestFirefox drives the console in a real headless Firefox over WebDriver
// BiDi: a lock's holder and its waiter shown in order, a release shown
// within a second without a reload (the server-sent events reach
// Firefox), and a dead letter requeued through the page's confirmation
// dialog.
func TestFirefox(t *testing.T) {
	ff := startFirefox(t)
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	_, ts, _ := serve(t, srv.Client, console.WithActions())

	holder, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("report-worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiter, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("report-worker-2"))
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- waiter.Lock(ctx) }()
	waitLine(t, ctx, srv.Client, "nightly", "report-worker-2")

	ff.navigate(t, ts.URL+"/")
	ff.poll(t, `document.getElementById('page-state').textContent === 'page: live'`, 10*time.Second)
	if ua := ff.eval(t, `navigator.userAgent`); !strings.Contains(ua, "Firefox/") {
		t.Fatalf("the browser is not Firefox: %s", ua)
	}
	if line := ff.eval(t, lockLine); line != `["report-worker-1","report-worker-2"]` {
		t.Fatalf("Firefox shows the lock's line as %s, want the holder then the waiter", line)
	}
	if n := ff.eval(t, `document.querySelectorAll('[data-lock="nightly"] .holder').length`); n != "1" {
		t.Fatalf("%s holders shown", n)
	}

	// Release: the page follows within a second, with no reload.
	ff.eval(t, `window.__notReloaded = true`)
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // the release is in etcd: the page has a second
	ff.poll(t, lockLine+`.join(",") === "report-worker-2"`, 5*time.Second)
	took := time.Since(start)
	t.Logf("release shown in Firefox %v after Unlock returned", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("Firefox took %v to show the release, want under 1s", took)
	}
	if ff.eval(t, `window.__notReloaded === true`) != "true" {
		t.Fatal("the page was reloaded")
	}
	if err := <-waited; err != nil {
		t.Fatalf("the waiter's Lock: %v", err)
	}

	// A dead letter, requeued from the page: the button opens the
	// confirmation dialog, Requeue in it sends the action.
	q, err := queue.New(srv.Client, "jobs", queue.WithMaxDeliveries(1))
	if err != nil {
		t.Fatal(err)
	}
	dead := deadLetter(t, q, newSession(t, srv.Client), `{"shard": 7}`)
	requeue := fmt.Sprintf(`document.querySelector('[data-queue="jobs"] .deadletters button[data-action="requeue"][data-id="%s"]')`, dead)
	ff.poll(t, requeue+` !== null`, 5*time.Second)
	ff.eval(t, requeue+`.click()`)
	ff.poll(t, `document.getElementById('confirm').open`, 5*time.Second)
	ff.eval(t, `document.getElementById('confirm-ok').click()`)
	ff.poll(t, `document.querySelector('[data-queue="jobs"] .deadletters') === null && document.querySelector('[data-queue="jobs"] .ready').textContent === '1 ready'`, 5*time.Second)
	if st, err := queue.Inspect(ctx, srv.Client, q.Name()); err != nil || len(st.Dead) != 0 || len(st.Ready) != 1 || st.Ready[0].ID != dead {
		t.Fatalf("after the requeue from Firefox: %+v %v", st, err)
	}
}
