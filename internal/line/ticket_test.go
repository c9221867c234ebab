package line_test

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/telemetry"
)

func TestGuardFencesStaleHolder(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	tk, err := line.Join(ctx, s, "res/a", "me", "res/", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !tk.Admitted(1) {
		t.Fatal("first ticket not admitted")
	}
	h := tk.Hold(telemetry.Of(telemetry.Lock))
	defer h.Release(ctx)
	if _, err := h.Guard().Do(ctx, clientv3.OpPut("data", "1")); err != nil {
		t.Fatalf("guarded write while held: %v", err)
	}
	// An operator deletes the key and someone else creates it anew: the old
	// holder's guard must fail and its Done must close.
	if _, err := srv.Client.Delete(ctx, "res/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, "res/a", "other"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h.Done(), 5*time.Second, "Done after delete")
	if !errors.Is(h.Err(), errs.KeyDeleted) {
		t.Errorf("Err = %v, want ErrKeyDeleted", h.Err())
	}
	if _, err := h.Guard().Do(ctx, clientv3.OpPut("data", "2")); !errors.Is(err, errs.NotHeld) {
		t.Fatalf("stale guarded write: got %v, want ErrNotHeld", err)
	}
	resp, _ := srv.Client.Get(ctx, "data")
	if string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("stale write landed: %q", resp.Kvs[0].Value)
	}
	// Release must not delete the newer key.
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	resp, _ = srv.Client.Get(ctx, "res/a")
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "other" {
		t.Fatal("stale Release deleted the newer key")
	}
}

func TestJoinValidates(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	if _, err := line.Join(ctx, s, "p/k", "", "p/", 0); !errors.Is(err, errs.InvalidLimit) {
		t.Errorf("limit 0: %v", err)
	}
	big := make([]byte, names.MaxValueBytes+1)
	if _, err := line.Join(ctx, s, "p/k", string(big), "p/", 1); !errors.Is(err, errs.ValueTooLarge) {
		t.Errorf("big value: %v", err)
	}
	for _, name := range []string{"", "a//b", "a/.x", "/a", "a/", "a\x00b"} {
		if err := names.Validate(name); !errors.Is(err, errs.InvalidName) {
			t.Errorf("name %q accepted", name)
		}
	}
	if err := names.Validate("jobs/report-1"); err != nil {
		t.Errorf("good name rejected: %v", err)
	}
}

// With a limit of N, the first N tickets are admitted at once and the next
// waits until one ahead of it leaves.
func TestWaitCountsLine(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	var ts []*line.Ticket
	for i := range 4 {
		tk, err := line.Join(ctx, s, s.LineKey("sem/"), "", "sem/", 2)
		if err != nil {
			t.Fatal(err)
		}
		if want := i < 2; tk.Admitted(2) != want {
			t.Fatalf("ticket %d admitted=%v, want %v", i, tk.Admitted(2), want)
		}
		ts = append(ts, tk)
	}
	done := make(chan error, 1)
	go func() { done <- ts[3].Wait(ctx, 2) }()
	// Removing the third (a waiter) does not admit the fourth.
	if err := ts[2].Delete(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("fourth admitted with two ahead: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := ts[0].Delete(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("fourth not admitted after a holder left")
	}
}

// A combined guard holds only while every one of its resources is held; a
// single guard is unchanged by combining it.
func TestCombineGuards(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	var hs []*hold.Hold
	for _, k := range []string{"res/a", "res/b", "res/c"} {
		tk, err := line.Join(ctx, s, k, "me", k+"/", 1)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, tk.Hold(telemetry.Of(telemetry.Lock)))
	}
	f := func(g concurrency.Guard) fence.Guard { return fence.Guard(g) }
	g := concurrency.Guard(fence.Combine(fence.Combine(f(hs[0].Guard()), f(hs[1].Guard())), f(hs[2].Guard())))
	if fence.Guard(g).Key() != "res/a" || g.Token() != hs[0].Token() || len(g.Cmps()) != 3 {
		t.Fatalf("combined guard: key %q token %d, %d cmps", fence.Guard(g).Key(), g.Token(), len(g.Cmps()))
	}
	if one := fence.Combine(f(hs[1].Guard())); len(one.Cmps()) != 1 || one.Key() != "res/b" {
		t.Fatal("a guard combined alone changed")
	}
	if _, err := g.Do(ctx, clientv3.OpPut("data", "1")); err != nil {
		t.Fatalf("guarded write while all held: %v", err)
	}
	if err := hs[2].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Do(ctx, clientv3.OpPut("data", "2")); !errors.Is(err, errs.NotHeld) {
		t.Fatalf("guarded write with the last resource gone: %v, want NotHeld", err)
	}
	if _, err := hs[0].Guard().Do(ctx, clientv3.OpPut("data", "3")); err != nil {
		t.Fatalf("the first resource's own guard: %v", err)
	}
	for _, h := range hs {
		_ = h.Release(ctx)
	}
}
