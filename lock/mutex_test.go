package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMutexExcludesAndHandsOff(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job", lock.WithValue("a"))
	b := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job", lock.WithValue("b"))
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	got := lockAsync(ctx, b)
	mustWait(t, got, "b.Lock while a holds")
	st, err := lock.Inspect(ctx, srv.Client, "job")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 1 || st.Holders[0].Value != "a" || len(st.Waiters) != 1 || st.Waiters[0].Value != "b" {
		t.Fatalf("Inspect = %+v, want holder a, waiter b", st)
	}
	tokA := a.Token()
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	if err := mustGet(t, got, 5*time.Second, "b.Lock after a.Unlock"); err != nil {
		t.Fatal(err)
	}
	if b.Token() <= tokA {
		t.Fatalf("token did not increase: a %d, b %d", tokA, b.Token())
	}
	if !errors.Is(a.Err(), concurrency.ErrReleased) {
		t.Errorf("a.Err after Unlock = %v", a.Err())
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if n := lineLen(t, srv.Client, "job"); n != 0 {
		t.Fatalf("%d keys left after both unlocked", n)
	}
}

// A TryLock that joined behind a holder and a waiter who both left before it
// read the head of the line takes the lock: it was free then, and the TryLock
// first in line. For a reader, no writer left is enough.
func TestTryLockTakesLockFreedMeanwhile(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	type locker interface {
		Lock(context.Context) error
		Unlock(context.Context) error
	}
	rd, wr := lock.RWLine("rw")
	for _, c := range []struct {
		name, key, rng string
		ahead          func() locker
	}{
		{"mutex", lock.Line("job"), lock.Line("job"), func() locker { return newMutex(t, s, "job") }},
		{"reader behind writers", rd, wr, func() locker {
			w, err := lock.NewRWMutex(s, "rw")
			if err != nil {
				t.Fatal(err)
			}
			return w
		}},
	} {
		// A holder and a waiter, so that TryLock reads the head afresh.
		a, w := c.ahead(), c.ahead()
		if err := a.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		waiting := lockAsync(ctx, w)
		mustWait(t, waiting, c.name+": w waits")
		cs := (*session.Session)(s)
		tk, err := line.Join(ctx, cs, cs.LineKey(c.key), "b", c.rng, 1)
		if err != nil {
			t.Fatal(err)
		}
		if tk.Admitted(1) {
			t.Fatalf("%s: admitted while held", c.name)
		}
		if err := a.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := mustGet(t, waiting, 5*time.Second, c.name+": w's Lock"); err != nil {
			t.Fatal(err)
		}
		if err := w.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		h, err := lock.TryHead(ctx, tk, c.rng)
		if err != nil {
			t.Fatalf("%s: TryLock after everyone ahead left = %v, want the lock", c.name, err)
		}
		if h.Token() != tk.Token() {
			t.Errorf("%s: hold token %d, ticket %d", c.name, h.Token(), tk.Token())
		}
		if _, err := h.Guard().Do(ctx, clientv3.OpPut("fenced", c.name)); err != nil {
			t.Errorf("%s: guarded write: %v", c.name, err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if resp, err := srv.Client.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly()); err != nil || resp.Count != 1 {
		t.Fatalf("keys left: %v %v, want only the fenced key", resp, err)
	}
}

func TestTryLockNamesHolder(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	a := newMutex(t, s, "job", lock.WithValue("host-a"))
	b := newMutex(t, s, "job", lock.WithValue("host-b"))
	if err := a.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	err := b.TryLock(ctx)
	var le *lock.LockedError
	if !errors.Is(err, lock.ErrLocked) || !errors.As(err, &le) || le.Holder.Value != "host-a" || le.Holder.Token != a.Token() {
		t.Fatalf("TryLock = %v, want ErrLocked naming host-a", err)
	}
	if n := lineLen(t, srv.Client, "job"); n != 1 {
		t.Fatalf("failed TryLock left a key: %d keys", n)
	}
	// With a waiter between, TryLock still names the holder, not the waiter.
	w := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job", lock.WithValue("host-w"))
	waiting := lockAsync(ctx, w)
	mustWait(t, waiting, "w waits")
	err = b.TryLock(ctx)
	if !errors.As(err, &le) || le.Holder.Value != "host-a" || le.Holder.Token != a.Token() {
		t.Fatalf("TryLock behind a waiter = %v, want ErrLocked naming host-a", err)
	}
	if n := lineLen(t, srv.Client, "job"); n != 2 {
		t.Fatalf("failed TryLock left a key: %d keys", n)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, waiting, 5*time.Second, "w's Lock"); err != nil {
		t.Fatal(err)
	}
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	// Two values on one session exclude each other; a value is not reentrant.
	if err := a.Lock(ctx); !errors.Is(err, lock.ErrAlreadyLocked) {
		t.Fatalf("relock = %v, want ErrAlreadyLocked", err)
	}
}

func TestLockCancelLeavesNoKey(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job")
	b := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	got := lockAsync(wctx, b)
	mustWait(t, got, "b waits")
	cancel()
	if err := mustGet(t, got, 5*time.Second, "cancelled Lock"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock = %v", err)
	}
	if n := lineLen(t, srv.Client, "job"); n != 1 {
		t.Fatalf("cancelled waiter left its key: %d keys", n)
	}
	// A timed-out Lock behaves the same.
	tctx, tcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer tcancel()
	if err := b.Lock(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed-out Lock = %v", err)
	}
	if n := lineLen(t, srv.Client, "job"); n != 1 {
		t.Fatalf("timed-out waiter left its key: %d keys", n)
	}
}

func TestNewMutexValidates(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	s := newSession(t, srv.Client, 5*time.Second)
	if _, err := lock.NewMutex(s, ""); !errors.Is(err, lock.ErrInvalidName) {
		t.Errorf("empty name: %v", err)
	}
	if _, err := lock.NewMutex(s, "a/.lock"); !errors.Is(err, lock.ErrInvalidName) {
		t.Errorf("reserved segment: %v", err)
	}
	if _, err := lock.NewMutex(s, "a", lock.WithValue(string(make([]byte, 2<<20)))); !errors.Is(err, lock.ErrValueTooLarge) {
		t.Errorf("2 MiB value: %v", err)
	}
}

// A lost hold closes Done before anyone else can get the lock, and a stale
// Unlock never deletes the next holder's key.
func TestLostHoldRevoke(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	sa := newSession(t, srv.Client, 5*time.Second)
	a := newMutex(t, sa, "job")
	b := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	got := lockAsync(ctx, b)
	mustWait(t, got, "b waits")
	if _, err := srv.Client.Revoke(ctx, sa.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, got, 5*time.Second, "b after a's lease revoked"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a.Done not closed after its lease was revoked")
	}
	if !errors.Is(a.Err(), concurrency.ErrLeaseExpired) {
		t.Fatalf("a.Err = %v, want ErrLeaseExpired (the key went with the lease)", a.Err())
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := lock.Inspect(ctx, srv.Client, "job")
	if len(st.Holders) != 1 || st.Holders[0].Token != b.Token() {
		t.Fatal("stale Unlock deleted the new holder's key")
	}
}

func TestLostHoldKeyDeleted(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Delete(ctx, a.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after an operator deleted the key")
	}
	if !errors.Is(a.Err(), concurrency.ErrKeyDeleted) {
		t.Fatalf("Err = %v, want ErrKeyDeleted", a.Err())
	}
	if _, err := a.Guard().Do(ctx, clientv3.OpPut("out", "x")); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("guarded write after loss = %v", err)
	}
	// A lost hold may be locked again.
	if err := a.Lock(ctx); err != nil {
		t.Fatalf("Lock after loss: %v", err)
	}
	_ = a.Unlock(ctx)
}

// A waiter whose own session dies stops waiting at once.
func TestWaiterStopsWhenSessionLost(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newMutex(t, newSession(t, srv.Client, 5*time.Second), "job")
	sb := newSession(t, srv.Client, 5*time.Second)
	b := newMutex(t, sb, "job")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	got := lockAsync(ctx, b)
	mustWait(t, got, "b waits")
	if err := sb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, got, 2*time.Second, "b after its session closed"); !errors.Is(err, concurrency.ErrSessionClosed) {
		t.Fatalf("b.Lock = %v, want ErrSessionClosed", err)
	}
}

// A client cut off from etcd: its hold is lost (Done closes) before the next
// waiter gets the lock, which happens once the lease expires.
func TestClientCutOff(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	a := newMutex(t, newSession(t, cut, ttl), "job")
	scw := newSession(t, cut, ttl)
	cw := newMutex(t, scw, "job") // a waiter on the cut-off client
	b := newMutex(t, newSession(t, srv.Client, ttl), "job")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	cwGot := lockAsync(ctx, cw)
	mustWait(t, cwGot, "cut-off waiter")
	bGot := lockAsync(ctx, b)
	mustWait(t, bGot, "b waits")
	cutAt := time.Now()
	p.Blackhole()
	var lostAt, gotAt time.Time
	for lostAt.IsZero() || gotAt.IsZero() {
		select {
		case <-a.Done():
			if lostAt.IsZero() {
				lostAt = time.Now()
			}
		case err := <-bGot:
			if err != nil {
				t.Fatal(err)
			}
			gotAt = time.Now()
			bGot = nil
		case <-time.After(10 * time.Second):
			t.Fatal("no handoff within 10s of the cut")
		}
		if !lostAt.IsZero() {
			// stop selecting on a closed channel
			if gotAt.IsZero() {
				if err := mustGet(t, bGot, 10*time.Second, "b after cut"); err != nil {
					t.Fatal(err)
				}
				gotAt = time.Now()
			}
		}
	}
	if !lostAt.Before(gotAt) {
		t.Fatalf("cut-off holder learned of its loss at %v, after b got the lock at %v", lostAt.Sub(cutAt), gotAt.Sub(cutAt))
	}
	if err := mustGet(t, cwGot, 5*time.Second, "cut-off waiter"); err == nil {
		t.Fatal("cut-off waiter got the lock")
	}
	if d := gotAt.Sub(cutAt); d > ttl+2*time.Second {
		t.Fatalf("next holder waited %v, want about the TTL", d)
	}
	p.Unblackhole()
}
