package counter_test

import (
	"context"
	"testing"
	"time"

	"github.com/concordkit/concord/counter"
	"github.com/concordkit/concord/embedtest"
)

// next receives one value from w within a bound.
func next(t *testing.T, w *counter.Watcher) counter.Value {
	t.Helper()
	select {
	case v, ok := <-w.C():
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		return v
	case <-time.After(15 * time.Second):
		t.Fatal("no value within 15s")
		return counter.Value{}
	}
}

// Every value is sent in order, even writes made back to back; a watcher
// restarted after the last revision it got resumes with the next value.
func TestCounterWatchEveryValueAndResume(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	k := newCounter(t, srv.Client, "hits")
	wctx, stop := context.WithCancel(ctx)
	w := k.Watch(wctx, 0)
	if v := next(t, w); v.N != 0 || v.Revision != 0 {
		t.Fatalf("first value %+v, want the unset counter", v)
	}
	for range 10 {
		if _, err := k.Add(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	var last counter.Value
	for i := 1; i <= 6; i++ {
		v := next(t, w)
		if v.N != int64(i) || v.Revision <= last.Revision || v.Resync {
			t.Fatalf("value %d: %+v after %+v", i, v, last)
		}
		last = v
	}
	stop()
	for range w.C() {
	}
	if w.Err() == nil {
		t.Fatal("a stopped watcher reports no reason")
	}
	w = k.Watch(ctx, last.Revision)
	for i := 7; i <= 10; i++ {
		if v := next(t, w); v.N != int64(i) {
			t.Fatalf("resumed watcher sent %+v, want %d", v, i)
		}
	}
}

// A watcher whose connection is cut misses nothing written meanwhile.
func TestCounterWatchThroughCut(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	p, c := embedtest.NewProxyClient(t, srv.Endpoints[0])
	k := newCounter(t, srv.Client, "hits")
	w := newCounter(t, c, "hits").Watch(ctx, 0)
	next(t, w)
	if _, err := k.Add(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if v := next(t, w); v.N != 1 {
		t.Fatalf("got %+v, want 1", v)
	}
	p.Blackhole()
	for range 5 {
		if _, err := k.Add(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	p.Unblackhole()
	for i := 2; i <= 6; i++ {
		if v := next(t, w); v.N != int64(i) || v.Resync {
			t.Fatalf("after the cut got %+v, want %d", v, i)
		}
	}
}

// Resuming after a compacted revision sends the current value, marked.
func TestCounterWatchAfterCompaction(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	k := newCounter(t, srv.Client, "hits")
	first, err := k.Add(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := k.Add(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	w := k.Watch(ctx, first.Revision)
	if v := next(t, w); v.N != 4 || !v.Resync {
		t.Fatalf("got %+v, want 4 marked Resync", v)
	}
	if _, err := k.Add(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if v := next(t, w); v.N != 5 || v.Resync {
		t.Fatalf("got %+v, want 5", v)
	}
}

// Resuming after the current value's own revision, once compacted, sends
// nothing again: nothing was missed.
func TestCounterWatchCompactedNothingMissed(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	k := newCounter(t, srv.Client, "hits")
	cur, err := k.Add(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, "other", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	w := k.Watch(ctx, cur.Revision)
	if _, err := k.Add(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if v := next(t, w); v.N != 2 || v.Resync {
		t.Fatalf("got %+v, want 2 (and no repeat of 1)", v)
	}
}
