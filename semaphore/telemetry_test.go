package semaphore_test

import (
	"context"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
	"github.com/concordkit/concord/semaphore"
)

func meteredSession(t *testing.T, srv *embedtest.Server, r *telemetrytest.Reader, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	opts = append([]concurrency.SessionOption{concurrency.WithTTL(5 * time.Second), concurrency.WithMeterProvider(r.Provider)}, opts...)
	s, err := concurrency.NewSession(testCtx(t), srv.Client, opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// until polls r's metric name (at the data points with attrs) until it
// equals want, for up to 20s.
func until(t *testing.T, r *telemetrytest.Reader, want float64, name string, attrs ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := r.Get(name, attrs...)
		if got.Found && got.Value == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %+v, want %v", name, attrs, got, want)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// With the name attribute each semaphore this process uses reports its
// limit (following a change made by another process), the permits this
// process holds and its waiters, apart from the other semaphores.
func TestMetricsSemaphoreNamed(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	s := meteredSession(t, srv, r, concurrency.WithNameAttribute())
	pool := newSem(t, s, "pool", 2, semaphore.WithFollowLimit())
	jobs := newSem(t, s, "jobs", 5)
	p1, p2, j1 := mustAcquire(t, ctx, pool), mustAcquire(t, ctx, pool), mustAcquire(t, ctx, jobs)
	until(t, r, 2, "concord.semaphore.limit", "concord.name", "pool")
	until(t, r, 5, "concord.semaphore.limit", "concord.name", "jobs")
	until(t, r, 2, "concord.holders", "recipe", "semaphore", "concord.name", "pool")
	until(t, r, 1, "concord.holders", "recipe", "semaphore", "concord.name", "jobs")

	third := acquireAsync(ctx, pool)
	until(t, r, 1, "concord.waiters", "recipe", "semaphore", "concord.name", "pool")
	until(t, r, 1, "concord.waiters", "recipe", "semaphore") // jobs has none

	// Another process raises the limit: this one's follower sees it, and
	// the waiter is granted.
	other := newSem(t, newSession(t, srv.Client, 5*time.Second), "pool", 2, semaphore.WithFollowLimit())
	if err := other.SetLimit(ctx, 3); err != nil {
		t.Fatal(err)
	}
	until(t, r, 3, "concord.semaphore.limit", "concord.name", "pool")
	a := mustGet(t, third, 10*time.Second, "third permit")
	if a.err != nil {
		t.Fatal(a.err)
	}
	until(t, r, 3, "concord.holders", "recipe", "semaphore", "concord.name", "pool")
	until(t, r, 0, "concord.waiters", "recipe", "semaphore", "concord.name", "pool")
	for _, p := range []*semaphore.Permit{p1, p2, a.p, j1} {
		if err := p.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	until(t, r, 0, "concord.holders", "recipe", "semaphore")
}

// Without the name attribute the limit gauge has no attribute: the limit
// the process last saw (one semaphore per process reads true).
func TestMetricsSemaphoreUnnamed(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	sem := newSem(t, meteredSession(t, srv, r), "solo", 4)
	p := mustAcquire(t, ctx, sem)
	defer func() { _ = p.Release(context.Background()) }()
	until(t, r, 4, "concord.semaphore.limit")
	until(t, r, 1, "concord.holders", "recipe", "semaphore")
	if got := telemetrytest.WithAttr(r.Collect(), "concord.name"); len(got) > 0 {
		t.Fatalf("%v carry concord.name without the option", got)
	}
}
