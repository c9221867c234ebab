package console_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/concordkit/concord/cmd/concord/internal/demo"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// screenshotEnv names the file TestDemoScreenshot writes the README's
// screenshot to (PNG), e.g. CONCORD_CONSOLE_SCREENSHOT=$PWD/docs/console.png.
const screenshotEnv = "CONCORD_CONSOLE_SCREENSHOT"

// demoPopulated is true once the page shows the demo's fleet at work: an
// elected coordinator, a wave under way (permits held while another worker
// waits for one, hosts claimed: locks held), every worker registered (%d is filled in with the
// run's Config.Workers) and a host's progress checkpointed. It names no key
// of the demo's, only what the console draws for each recipe.
const demoPopulated = `(() => {
	const all = s => Array.from(document.querySelectorAll(s));
	return document.getElementById('page-state').textContent === 'page: live'
		&& all('[data-election] .leader').length > 0
		&& all('[data-semaphore] .holder').length > 1
		&& all('[data-semaphore] .waiter').length > 0
		&& all('[data-lock] .holder').length > 1
		&& all('[data-service] [data-instance]').length >= %d
		&& all('#checkpoints tbody tr').length > 0
		&& !document.getElementById('sessions').textContent.includes('…');
})()`

// TestDemoScreenshot writes the README's picture of the console: it runs
// the demo's fleet (package demo's Run, as `concord demo` does, on its
// own embedded etcd), opens the console on that etcd in headless
// Chromium while the rollout runs, waits until the page shows the fleet's
// election, permits, claims and checkpoints populated, and writes a PNG of the whole
// page to $CONCORD_CONSOLE_SCREENSHOT. It then lets the demo finish and
// checks that its invariants held with the console watching.
//
// It runs only when that variable names a file, since it writes one:
//
//	CONCORD_CONSOLE_SCREENSHOT=$PWD/docs/console.png go test -run TestDemoScreenshot ./cmd/concord/console/
func TestDemoScreenshot(t *testing.T) {
	path := os.Getenv(screenshotEnv)
	if path == "" {
		t.Skipf("writes the README's screenshot: set %s to the PNG file to write", screenshotEnv)
	}
	tab := newBrowser(t)

	cfg := demo.DefaultConfig()
	cfg.Quiet = true
	cfg.Step = 400 * time.Millisecond // slow enough to catch the fleet mid-rollout
	cfg.Timeout = 3 * time.Minute
	endpoints := make(chan []string, 1)
	cfg.EtcdStarted = func(eps []string) { endpoints <- eps }
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	type result struct {
		rep *demo.Report
		err error
	}
	ran := make(chan result, 1)
	go func() {
		rep, err := demo.Run(ctx, cfg, io.Discard)
		ran <- result{rep, err}
	}()
	var eps []string
	select {
	case eps = <-endpoints:
	case r := <-ran:
		t.Fatalf("the demo ended before its etcd started: %v", r.err)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, ts, _ := serve(t, client)

	do(t, tab, chromedp.Navigate(ts.URL+"/"))
	took := poll(t, tab, fmt.Sprintf(demoPopulated, cfg.Workers), time.Minute)
	t.Logf("the page showed the fleet at work %v after it opened", took.Round(time.Millisecond))
	sctx, scancel := context.WithTimeout(tab, 30*time.Second)
	defer scancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(png))
	// The console stops before the demo's etcd does (serve's cleanup
	// closes it again: Close is safe twice).
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if err := c.Close(cctx); err != nil {
		t.Fatal(err)
	}
	ts.Close()

	r := <-ran
	if r.err != nil {
		t.Fatalf("demo: %v", r.err)
	}
	if !r.rep.OK() {
		t.Fatalf("the demo broke %d invariant(s) with the console watching", r.rep.Broken())
	}
}
