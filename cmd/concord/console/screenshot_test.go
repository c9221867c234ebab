package console_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
)

// screenshot sets the scene of the demo's rollout beside the test's lock
// and queue (a coordinator elected, upgrades under a semaphore, hosts in a
// queue, services registered, a topic of events) and writes a PNG of the
// page to path.
func screenshot(t *testing.T, tab context.Context, srv *embedtest.Server, url, path string) {
	t.Helper()
	ctx := testCtx(t)
	coord, err := election.New(newSession(t, srv.Client), "rollout/coordinator")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coord.Campaign(ctx, "coordinator-a (pid 4121)"); err != nil {
		t.Fatal(err)
	}
	standby, _ := election.New(newSession(t, srv.Client), "rollout/coordinator")
	go func() { _, _ = standby.Campaign(ctx, "coordinator-b (pid 4388)") }()
	for i, host := range []string{"host-01", "host-02", "host-03", "host-04"} {
		sem, err := semaphore.New(newSession(t, srv.Client), "rollout/upgrades", 3, semaphore.WithValue(host))
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, sem)
		if i < 3 {
			if _, err := sem.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
		} else {
			go func() { _, _ = sem.Acquire(ctx) }()
		}
	}
	hosts, _ := queue.New(srv.Client, "rollout/hosts")
	for i := 5; i <= 12; i++ {
		opts := []queue.EnqueueOption{queue.WithPriority(i % 3)}
		if i > 10 {
			opts = append(opts, queue.WithDelay(10*time.Minute))
		}
		if _, err := hosts.Enqueue(ctx, []byte(`{"host": "host-`+twoDigits(i)+`", "version": "v42"}`), opts...); err != nil {
			t.Fatal(err)
		}
	}
	worker := newSession(t, srv.Client)
	if _, err := hosts.Consumer(worker).TryClaim(ctx); err != nil {
		t.Fatal(err)
	}
	reg, err := discovery.NewRegistry(srv.Client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })
	for i, zone := range []string{"eu-1", "eu-1", "eu-2"} {
		in := discovery.Instance{ID: "payments-" + twoDigits(i+1), Addr: "10.0.0." + twoDigits(i+7) + ":7001", Metadata: map[string]string{"zone": zone, "version": "v41"}, Draining: i == 2}
		if _, err := reg.Register(ctx, "payments", in); err != nil {
			t.Fatal(err)
		}
	}
	ps, _ := pubsub.New(srv.Client, pubsub.WithKeepLast(100))
	for _, m := range []string{"wave 1 started", "host-01 upgraded", "host-02 upgraded"} {
		if _, err := ps.Publish(ctx, "rollout/events", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	do(t, tab, chromedp.Navigate(url+"/"))
	poll(t, tab, `document.getElementById('page-state').textContent === 'page: live' && document.querySelectorAll('[data-semaphore] .waiter').length === 1 && document.querySelectorAll('[data-election] .waiter').length === 1 && document.querySelector('[data-service="payments"]') !== null && document.querySelectorAll('#sessions td:nth-child(2)').length > 0 && !document.querySelector('#sessions').textContent.includes('…')`, 10*time.Second)
	sctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(png))
}

func twoDigits(i int) string { return string([]byte{byte('0' + i/10), byte('0' + i%10)}) }
