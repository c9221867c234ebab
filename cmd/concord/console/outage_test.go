package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

// TestOutageShowsLastKnownStateAndCatchesUp cuts the console off from etcd
// (a blackholing proxy): the page says since when it is disconnected and
// keeps the last state it read; changes made meanwhile show once etcd is
// back.
func TestOutageShowsLastKnownStateAndCatchesUp(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	p, pc := embedtest.NewProxyClient(t, srv.Endpoints[0])
	_, ts, logs := serve(t, pc, console.WithRequestTimeout(time.Second))

	before, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("before-outage"))
	if err != nil {
		t.Fatal(err)
	}
	if err := before.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waitSection(t, ts, "locks", 10*time.Second, containsAll("before-outage"))
	waitSection(t, ts, "cluster", 10*time.Second, containsAll("connected to etcd since"))

	p.Blackhole()
	cut := time.Now()
	cluster := waitSection(t, ts, "cluster", 20*time.Second, containsAll("disconnected since"))
	t.Logf("disconnection shown after %v: %s", time.Since(cut).Round(time.Millisecond), text(cluster))
	if !strings.Contains(cluster, "revision") {
		t.Fatalf("the last known cluster status is gone: %s", text(cluster))
	}
	// Meanwhile the lock changes hands; the console cannot see it yet.
	if err := before.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	during, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("during-outage"))
	if err != nil {
		t.Fatal(err)
	}
	if err := during.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, page := get(t, ts.URL+"/")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the page took %v during the outage", d)
	}
	if locks := section(page, "locks"); !strings.Contains(locks, "before-outage") {
		t.Fatalf("last known state lost during the outage: %s", text(locks))
	}

	p.Unblackhole()
	healed := time.Now()
	waitSection(t, ts, "locks", 30*time.Second, func(s string) bool {
		return strings.Contains(s, "during-outage") && !strings.Contains(s, "before-outage")
	})
	waitSection(t, ts, "cluster", 10*time.Second, containsAll("connected to etcd since"))
	t.Logf("caught up %v after etcd came back", time.Since(healed).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "etcd unreachable") {
		t.Errorf("the outage was not logged: %s", logs.String())
	}
}
