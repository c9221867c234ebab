package lock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
)

// A contended handoff costs at most 4 unary requests (Lock's transaction, the
// re-read after the waiter's watch is created, at most one more re-read, and
// Unlock) and opens no watch stream: every wait reuses its client's stream.
// etcd's Mutex needs 5 and a new stream each time. The re-read after the
// watch is created is skipped when nothing was written since Lock's read,
// which brings the mean (about 3.4 here) under the bound of 3.75 checked.
// Nor does a wait create a watch of its own once the contenders cycle in a
// steady order: the key ahead is the same name each time, and the watch on
// it kept from the last wait is taken up (session.WatchKey), so the server
// sees almost no watch requests (creates and cancels) per handoff.
func TestRequestsPerHandoff(t *testing.T) {
	const contenders, holds = 8, 400
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	rc := newRPCCounter()
	var ms []benchLocker
	for range contenders {
		c := newBenchClient(t, srv, rc)
		t.Cleanup(func() { _ = c.Close() })
		ms = append(ms, newMutex(t, newSession(t, c, 10*time.Second), "rq"))
	}
	// Every contender locks once, so each client has opened its streams.
	for _, m := range ms {
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before := rc.snapshot()
	st0, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var acquired atomic.Int64
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() {
			for acquired.Load() < holds {
				if err := m.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				acquired.Add(1)
				if err := m.Unlock(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	d := rc.snapshot().since(before)
	n := acquired.Load()
	perHold := float64(d.totalUnary()) / float64(n)
	t.Logf("%d holds among %d contenders: %.2f unary requests and %d watch streams opened per hold (%v)", n, contenders, perHold, d.streams[watchMethod], d)
	if perHold > 3.75 {
		t.Errorf("%.2f unary requests per handoff, want at most 3.75", perHold)
	}
	if s := d.streams[watchMethod]; s > 0 {
		t.Errorf("%d watch streams opened for %d waits, want none", s, n)
	}
	st, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wreqs := float64(st.Sub(st0).WatchRequests) / float64(n)
	t.Logf("%.2f watch requests per handoff at the server", wreqs)
	if wreqs > 0.5 {
		t.Errorf("%.2f watch requests per handoff, want at most 0.5 (a kept watch taken up)", wreqs)
	}
}
