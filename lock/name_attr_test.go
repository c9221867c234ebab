package lock_test

import (
	"context"
	"slices"
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

// lockRound takes and gives back a Mutex "job" (with one waiter handed the
// lock) and a read and a write hold of RWMutex "cfg", on s.
func lockRound(t *testing.T, s *concurrency.Session) {
	t.Helper()
	ctx := testCtx(t)
	a, b := newMutex(t, s, "job"), newMutex(t, s, "job")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	bGot := lockAsync(ctx, b)
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, bGot, 10*time.Second, "b"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	rw, err := lock.NewRWMutex(s, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	if err := rw.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rw.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rw.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rw.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// With concurrency.WithNameAttribute the wait, hold and holder metrics
// carry the lock's name (concord.name), and so do the spans; without it no
// metric has the attribute.
func TestMetricsNameAttribute(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())

	r := telemetrytest.New(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	lockRound(t, meteredSession(t, srv.Client, r, concurrency.WithNameAttribute(), concurrency.WithTracerProvider(tp)))
	wantCount(t, r, 2, "concord.wait.duration", "recipe", "lock", "outcome", "acquired", "concord.name", "job")
	wantCount(t, r, 2, "concord.hold.duration", "recipe", "lock", "concord.name", "job")
	wantCount(t, r, 2, "concord.wait.duration", "recipe", "rwlock", "concord.name", "cfg")
	if got := r.Get("concord.holders", "recipe", "lock", "concord.name", "job"); !got.Found || got.Value != 0 {
		t.Fatalf("holders{job} = %+v, want found and 0", got)
	}
	spans := 0
	for _, sp := range rec.Ended() {
		attrs := attribute.NewSet(sp.Attributes()...)
		v, _ := attrs.Value("concord.name")
		switch sp.Name() {
		case "concord.lock.Lock":
			spans++
			if v.AsString() != "job" {
				t.Errorf("%s span's concord.name = %q, want job", sp.Name(), v.Emit())
			}
		case "concord.rwlock.RLock", "concord.rwlock.Lock":
			spans++
			if v.AsString() != "cfg" {
				t.Errorf("%s span's concord.name = %q, want cfg", sp.Name(), v.Emit())
			}
		}
	}
	if spans != 4 {
		t.Fatalf("%d lock spans recorded, want 4", spans)
	}

	plain := telemetrytest.New(t)
	lockRound(t, meteredSession(t, srv.Client, plain))
	wantCount(t, plain, 2, "concord.wait.duration", "recipe", "lock", "outcome", "acquired")
	if named := telemetrytest.WithAttr(plain.Collect(), "concord.name"); len(named) > 0 {
		t.Fatalf("without WithNameAttribute, %v carry concord.name", named)
	}
	if named := telemetrytest.WithAttr(r.Collect(), "concord.name"); !slices.Contains(named, "concord.holders") {
		t.Fatalf("with WithNameAttribute, only %v carry concord.name", named)
	}
}

// RLock's span is a child of the caller's span, with the outcome, the token
// and how many were ahead (one writer).
func TestRLockSpan(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()
	w, r := newRW(t, srv, "w"), newRWOn(t, s)
	if err := w.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	pctx, parent := tp.Tracer("test").Start(ctx, "caller")
	got := make(chan error, 1)
	go func() { got <- r.RLock(pctx) }()
	waitLineLen(t, srv, 2)
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, got, 10*time.Second, "RLock"); err != nil {
		t.Fatal(err)
	}
	parent.End()
	for _, sp := range rec.Ended() {
		if sp.Name() != "concord.rwlock.RLock" {
			continue
		}
		if sp.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("RLock span's parent %v, want the caller's %v", sp.Parent().SpanID(), parent.SpanContext().SpanID())
		}
		attrs := attribute.NewSet(sp.Attributes()...)
		if v, _ := attrs.Value("concord.token"); v.AsInt64() != int64(r.Token()) || r.Token() == 0 {
			t.Fatalf("span token %v, want %d", v.Emit(), r.Token())
		}
		if v, _ := attrs.Value("concord.outcome"); v.AsString() != "acquired" {
			t.Fatalf("span outcome %q", v.Emit())
		}
		if v, _ := attrs.Value("concord.ahead"); v.AsInt64() != 1 {
			t.Fatalf("span ahead %v, want 1", v.Emit())
		}
		return
	}
	t.Fatal("no concord.rwlock.RLock span recorded")
}

func newRWOn(t *testing.T, s *concurrency.Session) *lock.RWMutex {
	t.Helper()
	rw, err := lock.NewRWMutex(s, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	return rw
}

// waitLineLen polls until RWMutex "cfg" has n keys (holders and waiters).
func waitLineLen(t *testing.T, srv *embedtest.Server, n int64) {
	t.Helper()
	eventually(t, "the line to reach its length", func() bool {
		resp, err := srv.Client.Get(testCtx(t), "cfg/.rw/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == n
	})
}
