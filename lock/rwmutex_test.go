package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

func newRW(t *testing.T, srv *embedtest.Server, v string) *lock.RWMutex {
	t.Helper()
	rw, err := lock.NewRWMutex(newSession(t, srv.Client, 5*time.Second), "cfg", lock.WithValue(v))
	if err != nil {
		t.Fatal(err)
	}
	return rw
}

func TestRWMutexReadersShareWritersExclude(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	r1, r2, w, r3 := newRW(t, srv, "r1"), newRW(t, srv, "r2"), newRW(t, srv, "w"), newRW(t, srv, "r3")
	if err := r1.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.TryRLock(ctx); err != nil {
		t.Fatalf("second reader: %v", err)
	}
	if err := w.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("writer TryLock with readers in = %v", err)
	}
	wGot := lockAsync(ctx, w)
	mustWait(t, wGot, "writer behind readers")
	// A reader that comes after a waiting writer waits too: no starvation.
	r3Got := make(chan error, 1)
	go func() { r3Got <- r3.RLock(ctx) }()
	mustWait(t, r3Got, "reader behind a waiting writer")
	st, err := lock.InspectRW(ctx, srv.Client, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 2 || len(st.Waiters) != 2 || st.Waiters[0].Value != "w" || st.Waiters[0].Reader {
		t.Fatalf("InspectRW = %+v", st)
	}
	if err := r1.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	mustWait(t, wGot, "writer with one reader left")
	if err := r2.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, wGot, 5*time.Second, "writer after readers left"); err != nil {
		t.Fatal(err)
	}
	mustWait(t, r3Got, "reader while writer holds")
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, r3Got, 5*time.Second, "reader after writer left"); err != nil {
		t.Fatal(err)
	}
	if r3.Token() <= w.Token() {
		t.Fatalf("reader token %d not above writer's %d", r3.Token(), w.Token())
	}
	_ = r3.RUnlock(ctx)
}

func TestDoCancelsOnLoss(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	m, err := lock.NewMutex(s, "job")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var cause error
	done := make(chan error, 1)
	go func() {
		done <- m.Do(ctx, func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			cause = context.Cause(ctx)
			return ctx.Err()
		})
	}()
	<-started
	st, err := lock.Inspect(ctx, srv.Client, "job")
	if err != nil || len(st.Holders) != 1 {
		t.Fatalf("Inspect while Do runs: %+v %v", st, err)
	}
	if _, err := srv.Client.Delete(ctx, st.Holders[0].Key); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, done, 5*time.Second, "Do after its lock was deleted"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v", err)
	}
	if cause == nil {
		t.Fatal("fn's context has no cause")
	}
	// Normal path: fn runs under the lock, which is released after.
	ran := false
	if err := m.Do(ctx, func(ctx context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do = %v, ran %v", err, ran)
	}
	if n := lineLen(t, srv.Client, "job"); n != 0 {
		t.Fatalf("Do left %d keys", n)
	}
}
