package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
	"github.com/concordkit/concord/lock"
)

func meteredSession(t *testing.T, c *clientv3.Client, r *telemetrytest.Reader, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	opts = append([]concurrency.SessionOption{concurrency.WithTTL(2 * time.Second), concurrency.WithMeterProvider(r.Provider)}, opts...)
	s, err := concurrency.NewSession(testCtx(t), c, opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// eventually polls cond until it holds or 20s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func want(t *testing.T, r *telemetrytest.Reader, v float64, name string, attrs ...string) {
	t.Helper()
	if got := r.Get(name, attrs...); got.Value != v {
		t.Fatalf("%s%v = %v, want %v", name, attrs, got.Value, v)
	}
}

func wantCount(t *testing.T, r *telemetrytest.Reader, n uint64, name string, attrs ...string) {
	t.Helper()
	if got := r.Get(name, attrs...); got.Count != n {
		t.Fatalf("%s%v: %d recorded, want %d", name, attrs, got.Count, n)
	}
}

// A handoff, a cancelled wait and a failed TryLock move the wait, waiter,
// holder and hold metrics as they happen; the keepalive is measured.
func TestMetricsLockHandoff(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	s := meteredSession(t, srv.Client, r)
	a, b, c := newMutex(t, s, "job"), newMutex(t, s, "job"), newMutex(t, s, "job")
	want(t, r, 1, "concord.session.active")

	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	want(t, r, 1, "concord.holders", "recipe", "lock")
	bGot := lockAsync(ctx, b)
	eventually(t, "b counted as a waiter", func() bool { return r.Get("concord.waiters", "recipe", "lock").Value == 1 })

	if err := c.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock = %v, want ErrLocked", err)
	}
	wantCount(t, r, 1, "concord.wait.duration", "recipe", "lock", "outcome", "try_failed")
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if err := c.Lock(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with a short deadline = %v", err)
	}
	cancel()
	wantCount(t, r, 1, "concord.wait.duration", "recipe", "lock", "outcome", "cancelled")

	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, bGot, 10*time.Second, "b"); err != nil {
		t.Fatal(err)
	}
	wantCount(t, r, 2, "concord.wait.duration", "recipe", "lock", "outcome", "acquired")
	want(t, r, 0, "concord.waiters", "recipe", "lock")
	want(t, r, 1, "concord.holders", "recipe", "lock")
	wantCount(t, r, 1, "concord.hold.duration", "recipe", "lock")
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	want(t, r, 0, "concord.holders", "recipe", "lock")
	wantCount(t, r, 2, "concord.hold.duration", "recipe", "lock")
	want(t, r, 0, "concord.hold.lost")

	eventually(t, "a keepalive acknowledged", func() bool { return r.Get("concord.session.keepalive.duration").Count > 0 })
	m := r.Get("concord.session.renew_margin")
	// TTL 2s, margin 400ms: the deadline is at most 1.6s after an ack.
	if m.Count == 0 || m.Value/float64(m.Count) <= 0 || m.Value/float64(m.Count) > 1.6 {
		t.Fatalf("renew margin: %d recorded, mean %v s, want in (0, 1.6]", m.Count, m.Value/float64(max(m.Count, 1)))
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want(t, r, 0, "concord.session.active")
	want(t, r, 0, "concord.session.lost")
}

// A hold lost to a revoked lease counts reason=revoked, for the session and
// for the hold.
func TestMetricsRevoked(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	s := meteredSession(t, srv.Client, r)
	m := newMutex(t, s, "job")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Revoke(ctx, s.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hold not lost within 10s of the revoke")
	}
	want(t, r, 1, "concord.session.lost", "reason", "revoked")
	want(t, r, 1, "concord.hold.lost", "recipe", "lock", "reason", "revoked")
	want(t, r, 0, "concord.holders", "recipe", "lock")
	want(t, r, 0, "concord.session.active")
}

// A client cut off from etcd counts its session lost with
// reason=renew_deadline, before the server could expire the lease.
func TestMetricsRenewDeadline(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	r := telemetrytest.New(t)
	s := meteredSession(t, cut, r)
	m := newMutex(t, s, "job")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	defer p.Unblackhole()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hold not lost within 10s of the cut")
	}
	want(t, r, 1, "concord.session.lost", "reason", "renew_deadline")
	want(t, r, 1, "concord.hold.lost", "recipe", "lock", "reason", "renew_deadline")
}

// Lock's span is a child of the caller's span and carries the fencing token
// and the outcome.
func TestLockSpan(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()
	m := newMutex(t, s, "job")
	pctx, parent := tp.Tracer("test").Start(ctx, "caller")
	if err := m.Lock(pctx); err != nil {
		t.Fatal(err)
	}
	parent.End()
	var found bool
	for _, sp := range rec.Ended() {
		if sp.Name() != "concord.lock.Lock" {
			continue
		}
		found = true
		if sp.Parent().SpanID() != parent.SpanContext().SpanID() || sp.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Fatalf("Lock span's parent %v, want the caller's span %v", sp.Parent().SpanID(), parent.SpanContext().SpanID())
		}
		attrs := attribute.NewSet(sp.Attributes()...)
		if v, _ := attrs.Value("concord.token"); v.AsInt64() != int64(m.Token()) || m.Token() == 0 {
			t.Fatalf("span token %v, want %d", v.Emit(), m.Token())
		}
		if v, _ := attrs.Value("concord.outcome"); v.AsString() != "acquired" {
			t.Fatalf("span outcome %q", v.AsString())
		}
		if v, ok := attrs.Value("concord.ahead"); !ok || v.AsInt64() != 0 {
			t.Fatalf("span ahead %v (%v)", v.Emit(), ok)
		}
	}
	if !found {
		t.Fatal("no concord.lock.Lock span recorded")
	}
}
