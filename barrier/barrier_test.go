package barrier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/barrier"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

func TestBarrierHoldWaitRelease(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	b, err := barrier.New(srv.Client, "deploy/gate")
	if err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, async(func() error { return b.Wait(ctx) }), 5*time.Second, "Wait on an open barrier"); err != nil {
		t.Fatal(err)
	}
	if err := b.Hold(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Hold(ctx); err != nil {
		t.Fatalf("second Hold: %v", err)
	}
	if held, err := b.IsHeld(ctx); err != nil || !held {
		t.Fatalf("IsHeld = %v, %v", held, err)
	}
	// Waiters on other clients, as other processes would be.
	var waits []<-chan error
	for range 5 {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		wb, _ := barrier.New(c, "deploy/gate")
		waits = append(waits, async(func() error { return wb.Wait(ctx) }))
	}
	for _, w := range waits {
		mustBlock(t, w, "Wait on a held barrier")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for _, w := range waits {
		if err := mustGet(t, w, 5*time.Second, "Wait after Release"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if n := keysUnder(t, srv.Client, "deploy/gate"); n != 0 {
		t.Fatalf("%d keys left", n)
	}
}

func TestBarrierWaitCancelled(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	b, _ := barrier.New(srv.Client, "gate")
	if err := b.Hold(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := async(func() error { return b.Wait(wctx) })
	mustBlock(t, w, "Wait")
	cancel()
	if err := mustGet(t, w, 5*time.Second, "cancelled Wait"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait = %v", err)
	}
}

// A release while a waiter's connection is cut is seen when it comes back,
// even if the barrier was held again meanwhile: the waiter resumes its watch
// after the last revision it saw instead of re-reading the key.
func TestBarrierReleaseSeenAfterCut(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	p, c := embedtest.NewProxyClient(t, srv.Endpoints[0])
	b, _ := barrier.New(srv.Client, "gate")
	if err := b.Hold(ctx); err != nil {
		t.Fatal(err)
	}
	wb, _ := barrier.New(c, "gate")
	w := async(func() error { return wb.Wait(ctx) })
	mustBlock(t, w, "Wait")
	p.Blackhole()
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Hold(ctx); err != nil {
		t.Fatal(err)
	}
	mustBlock(t, w, "Wait while cut off")
	p.Unblackhole()
	if err := mustGet(t, w, 15*time.Second, "Wait after the cut"); err != nil {
		t.Fatal(err)
	}
}

func TestBarrierGuarded(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	m, _ := lock.NewMutex(s, "coordinator")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := barrier.New(srv.Client, "gate", barrier.WithGuard(m.Guard()))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Hold(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Hold(ctx); err != nil {
		t.Fatalf("Hold of a held barrier under a live guard: %v", err)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx); !errors.Is(err, barrier.ErrNotHeld) {
		t.Fatalf("Release after the guard was lost = %v, want ErrNotHeld", err)
	}
	if held, _ := b.IsHeld(ctx); !held {
		t.Fatal("a stale guard's Release landed")
	}
	open, _ := barrier.New(srv.Client, "gate")
	if err := open.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Hold(ctx); !errors.Is(err, barrier.ErrNotHeld) {
		t.Fatalf("Hold after the guard was lost = %v, want ErrNotHeld", err)
	}
	if held, _ := b.IsHeld(ctx); held {
		t.Fatal("a stale guard's Hold landed")
	}
}

func TestBarrierBadName(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	for _, name := range []string{"", "a//b", "a/.x"} {
		if _, err := barrier.New(srv.Client, name); !errors.Is(err, barrier.ErrInvalidName) {
			t.Errorf("New(%q) = %v, want ErrInvalidName", name, err)
		}
	}
}
