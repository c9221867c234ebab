package counter_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/counter"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newCounter(t testing.TB, c *clientv3.Client, name string, opts ...counter.Option) *counter.Counter {
	t.Helper()
	k, err := counter.New(c, name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCounterOperations(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	k := newCounter(t, srv.Client, "hits")
	if v, err := k.Get(ctx); err != nil || v.N != 0 || v.Revision != 0 {
		t.Fatalf("Get of a new counter = %+v, %v", v, err)
	}
	v, err := k.Add(ctx, 5)
	if err != nil || v.N != 5 || v.Revision == 0 {
		t.Fatalf("Add(5) = %+v, %v", v, err)
	}
	if v, err = k.Add(ctx, -7); err != nil || v.N != -2 {
		t.Fatalf("Add(-7) = %+v, %v", v, err)
	}
	// Another Counter value of the same name (another process) sees it
	// and its writes are seen in turn, though each caches its last view.
	other := newCounter(t, srv.Client, "hits")
	if v, err := other.Add(ctx, 3); err != nil || v.N != 1 {
		t.Fatalf("other.Add(3) = %+v, %v", v, err)
	}
	if v, err := k.Add(ctx, 1); err != nil || v.N != 2 {
		t.Fatalf("Add(1) after another's write = %+v, %v", v, err)
	}
	if cur, ok, err := k.CompareAndSwap(ctx, 7, 9); err != nil || ok || cur.N != 2 {
		t.Fatalf("CompareAndSwap(7, 9) = %+v %v %v, want not swapped at 2", cur, ok, err)
	}
	if _, err := other.Set(ctx, 7); err != nil {
		t.Fatal(err)
	}
	// k's cached view (2) is stale: its CompareAndSwap must not fail on it.
	if cur, ok, err := k.CompareAndSwap(ctx, 7, 9); err != nil || !ok || cur.N != 9 {
		t.Fatalf("CompareAndSwap(7, 9) = %+v %v %v, want swapped to 9", cur, ok, err)
	}
	if _, err := srv.Client.Delete(ctx, counter.Key("hits")); err != nil {
		t.Fatal(err)
	}
	if cur, ok, err := k.CompareAndSwap(ctx, 0, 1); err != nil || !ok || cur.N != 1 {
		t.Fatalf("CompareAndSwap(0, 1) on a deleted counter = %+v %v %v", cur, ok, err)
	}
	if _, err := k.Set(ctx, math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Add(ctx, 1); !errors.Is(err, counter.ErrOverflow) {
		t.Fatalf("Add past MaxInt64 = %v, want ErrOverflow", err)
	}
	if _, err := srv.Client.Put(ctx, counter.Key("hits"), "twelve"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx); !errors.Is(err, counter.ErrNotInteger) {
		t.Fatalf("Get of a non-integer = %v", err)
	}
	if _, err := k.Add(ctx, 1); !errors.Is(err, counter.ErrNotInteger) {
		t.Fatalf("Add to a non-integer = %v", err)
	}
	if _, err := counter.New(srv.Client, "a//b"); !errors.Is(err, counter.ErrInvalidName) {
		t.Fatalf("New with a bad name = %v", err)
	}
}

// Concurrent Adds from several clients lose no update: every Add returns a
// distinct value and the total is exact.
func TestCounterConcurrentAdds(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const workers, adds = 8, 25
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		k := newCounter(t, c, "hits")
		wg.Go(func() {
			for range adds {
				v, err := k.Add(ctx, 1)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				dup := seen[v.N]
				seen[v.N] = true
				mu.Unlock()
				if dup {
					errs <- errors.New("two Adds returned the same value")
					return
				}
			}
		})
		_ = i
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, err := newCounter(t, srv.Client, "hits").Get(ctx)
	if err != nil || v.N != workers*adds {
		t.Fatalf("final value %+v %v, want %d", v, err, workers*adds)
	}
}

func TestCounterGuarded(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	m, _ := lock.NewMutex(s, "owner")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	k := newCounter(t, srv.Client, "budget", counter.WithGuard(m.Guard()))
	if _, err := k.Add(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Add(ctx, 1); !errors.Is(err, counter.ErrNotHeld) {
		t.Fatalf("Add after the guard was lost = %v, want ErrNotHeld", err)
	}
	if _, _, err := k.CompareAndSwap(ctx, 3, 4); !errors.Is(err, counter.ErrNotHeld) {
		t.Fatalf("CompareAndSwap after the guard was lost = %v, want ErrNotHeld", err)
	}
	if v, _ := newCounter(t, srv.Client, "budget").Get(ctx); v.N != 3 {
		t.Fatalf("value %d after stale writes, want 3", v.N)
	}
}
