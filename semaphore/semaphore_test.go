package semaphore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestKPermits(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	var permits []*semaphore.Permit
	for i := range 3 {
		sem := newSem(t, newSession(t, srv.Client, 5*time.Second), "rollout", 3, semaphore.WithValue(fmt.Sprintf("host-%d", i)))
		permits = append(permits, mustAcquire(t, ctx, sem))
	}
	for i := 1; i < len(permits); i++ {
		if permits[i].Token() <= permits[i-1].Token() {
			t.Fatalf("tokens not increasing: %d then %d", permits[i-1].Token(), permits[i].Token())
		}
	}
	late := newSem(t, newSession(t, srv.Client, 5*time.Second), "rollout", 3, semaphore.WithValue("host-3"))
	got := acquireAsync(ctx, late)
	mustWait(t, got, "fourth Acquire with 3 permits held")
	st := inspect(t, srv.Client, "rollout")
	if st.Limit != 3 || len(st.Holders) != 3 || len(st.Waiters) != 1 || st.Waiters[0].Value != "host-3" || st.Holders[0].Value != "host-0" {
		t.Fatalf("Inspect = %+v", st)
	}
	if st.Holders[1].Token != permits[1].Token() {
		t.Fatalf("holder token %d, permit token %d", st.Holders[1].Token, permits[1].Token())
	}
	if err := permits[1].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := permits[1].Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if !errors.Is(permits[1].Err(), concurrency.ErrReleased) {
		t.Fatalf("Err after Release = %v", permits[1].Err())
	}
	a := mustGet(t, got, 5*time.Second, "fourth Acquire after a release")
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.p.Value() != "host-3" || a.p.Token() <= permits[2].Token() {
		t.Fatalf("permit value %q token %d", a.p.Value(), a.p.Token())
	}
	for _, p := range []*semaphore.Permit{permits[0], permits[2], a.p} {
		if err := p.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := lineLen(t, srv.Client, "rollout"); n != 0 {
		t.Fatalf("%d keys left after every permit was released", n)
	}
}

func TestTryAcquire(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	sem := newSem(t, s, "jobs", 2)
	p1, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sem.TryAcquire(ctx); !errors.Is(err, semaphore.ErrNoPermit) {
		t.Fatalf("third TryAcquire = %v, want ErrNoPermit", err)
	}
	if n := lineLen(t, srv.Client, "jobs"); n != 2 {
		t.Fatalf("failed TryAcquire left a key: %d keys", n)
	}
	// A waiter is ahead of any later TryAcquire, even once a permit frees.
	got := acquireAsync(ctx, sem)
	waitLine(t, srv.Client, "jobs", 3)
	if err := p1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	a := mustGet(t, got, 5*time.Second, "waiter after release")
	if a.err != nil {
		t.Fatal(a.err)
	}
	if _, err := sem.TryAcquire(ctx); !errors.Is(err, semaphore.ErrNoPermit) {
		t.Fatalf("TryAcquire with all permits held = %v", err)
	}
	_ = p2.Release(ctx)
	p3, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire with a free permit = %v", err)
	}
	_ = p3.Release(ctx)
	_ = a.p.Release(ctx)
}

// Permits are granted in the order Acquire calls joined the line, one per
// release.
func TestFIFO(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	const limit, waiters = 2, 6
	holders := make([]*semaphore.Permit, 0, limit)
	for range limit {
		holders = append(holders, mustAcquire(t, ctx, newSem(t, newSession(t, srv.Client, 5*time.Second), "fifo", limit)))
	}
	var chs []<-chan acquired
	for i := range waiters {
		// Each waiter on its own connection, joining after the previous.
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		sem := newSem(t, newSession(t, c, 5*time.Second), "fifo", limit, semaphore.WithValue(fmt.Sprint(i)))
		chs = append(chs, acquireAsync(ctx, sem))
		waitLine(t, srv.Client, "fifo", limit+i+1)
	}
	held := holders
	for i := range waiters {
		if err := held[0].Release(ctx); err != nil {
			t.Fatal(err)
		}
		held = held[1:]
		a := mustGet(t, chs[i], 5*time.Second, fmt.Sprintf("waiter %d", i))
		if a.err != nil {
			t.Fatal(a.err)
		}
		if a.p.Value() != fmt.Sprint(i) {
			t.Fatalf("grant %d went to waiter %s", i, a.p.Value())
		}
		held = append(held, a.p)
		for j := i + 1; j < waiters; j++ {
			select {
			case a := <-chs[j]:
				t.Fatalf("waiter %d admitted out of turn after grant %d (err %v)", j, i, a.err)
			default:
			}
		}
	}
	for _, p := range held {
		_ = p.Release(ctx)
	}
}

func TestCancelLeavesNoKey(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	sem := newSem(t, s, "jobs", 1)
	p := mustAcquire(t, ctx, sem)
	wctx, cancel := context.WithCancel(ctx)
	got := acquireAsync(wctx, sem)
	waitLine(t, srv.Client, "jobs", 2)
	cancel()
	if a := mustGet(t, got, 5*time.Second, "cancelled Acquire"); !errors.Is(a.err, context.Canceled) {
		t.Fatalf("cancelled Acquire = %v", a.err)
	}
	if n := lineLen(t, srv.Client, "jobs"); n != 1 {
		t.Fatalf("cancelled waiter left its key: %d keys", n)
	}
	tctx, tcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer tcancel()
	if _, err := sem.Acquire(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed-out Acquire = %v", err)
	}
	if n := lineLen(t, srv.Client, "jobs"); n != 1 {
		t.Fatalf("timed-out waiter left its key: %d keys", n)
	}
	// Close ends a wait in progress with ErrClosed and leaves no key.
	got = acquireAsync(ctx, sem)
	waitLine(t, srv.Client, "jobs", 2)
	sem.Close()
	sem.Close()
	if a := mustGet(t, got, 5*time.Second, "Acquire during Close"); !errors.Is(a.err, semaphore.ErrClosed) {
		t.Fatalf("Acquire during Close = %v", a.err)
	}
	if _, err := sem.Acquire(ctx); !errors.Is(err, semaphore.ErrClosed) {
		t.Fatalf("Acquire after Close = %v", err)
	}
	if n := lineLen(t, srv.Client, "jobs"); n != 1 {
		t.Fatalf("closed waiter left its key: %d keys", n)
	}
	// Permits outlive the Semaphore that granted them.
	if p.Err() != nil {
		t.Fatalf("permit lost on Close: %v", p.Err())
	}
	_ = p.Release(ctx)
}

// A crashed holder's permit returns when its lease expires; a revoked one
// at once. The lost permit's Done closes.
func TestCrashedHolderPermitReturns(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	for _, how := range []string{"revoke", "expire"} {
		t.Run(how, func(t *testing.T) {
			name := "crash-" + how
			sa := newSession(t, srv.Client, crashTTL())
			pa := mustAcquire(t, ctx, newSem(t, sa, name, 1))
			got := acquireAsync(ctx, newSem(t, newSession(t, srv.Client, 5*time.Second), name, 1))
			waitLine(t, srv.Client, name, 2)
			start := time.Now()
			switch how {
			case "revoke":
				if _, err := srv.Client.Revoke(ctx, sa.Lease()); err != nil {
					t.Fatal(err)
				}
			case "expire":
				sa.Orphan() // the process dies: no more keepalives
			}
			a := mustGet(t, got, 10*time.Second, "waiter after the holder crashed")
			if a.err != nil {
				t.Fatal(a.err)
			}
			t.Logf("permit returned after %v", time.Since(start).Round(time.Millisecond))
			select {
			case <-pa.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("crashed holder's Done not closed")
			}
			if pa.Err() == nil || errors.Is(pa.Err(), concurrency.ErrReleased) {
				t.Fatalf("crashed holder's Err = %v", pa.Err())
			}
			// A stale Release never deletes the new holder's key.
			if err := pa.Release(ctx); err != nil {
				t.Fatal(err)
			}
			st := inspect(t, srv.Client, name)
			if len(st.Holders) != 1 || st.Holders[0].Token != a.p.Token() {
				t.Fatalf("after the crash: %+v", st)
			}
			_ = a.p.Release(ctx)
		})
	}
}

// A waiter whose session is lost stops at once with the session's error.
func TestWaiterSessionLost(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	p := mustAcquire(t, ctx, newSem(t, newSession(t, srv.Client, 5*time.Second), "jobs", 1))
	sb := newSession(t, srv.Client, 5*time.Second)
	got := acquireAsync(ctx, newSem(t, sb, "jobs", 1))
	waitLine(t, srv.Client, "jobs", 2)
	if _, err := srv.Client.Revoke(ctx, sb.Lease()); err != nil {
		t.Fatal(err)
	}
	if a := mustGet(t, got, 5*time.Second, "waiter after its lease was revoked"); !errors.Is(a.err, concurrency.ErrLeaseExpired) {
		t.Fatalf("Acquire = %v, want ErrLeaseExpired", a.err)
	}
	if n := lineLen(t, srv.Client, "jobs"); n != 1 {
		t.Fatalf("%d keys in line", n)
	}
	_ = p.Release(ctx)
}

func TestNewValidates(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	s := newSession(t, srv.Client, 5*time.Second)
	cases := []struct {
		name  string
		limit int
		opts  []semaphore.Option
		want  error
	}{
		{"", 1, nil, semaphore.ErrInvalidName},
		{"a/.sem", 1, nil, semaphore.ErrInvalidName},
		{"a", 0, nil, semaphore.ErrInvalidLimit},
		{"a", -3, nil, semaphore.ErrInvalidLimit},
		{"a", 1, []semaphore.Option{semaphore.WithValue(string(make([]byte, 2<<20)))}, semaphore.ErrValueTooLarge},
	}
	for _, c := range cases {
		if _, err := semaphore.New(s, c.name, c.limit, c.opts...); !errors.Is(err, c.want) {
			t.Errorf("New(%q, %d) = %v, want %v", c.name, c.limit, err, c.want)
		}
	}
	sem := newSem(t, s, "a", 1)
	if err := sem.SetLimit(testCtx(t), 0); !errors.Is(err, semaphore.ErrInvalidLimit) {
		t.Errorf("SetLimit(0) = %v", err)
	}
}

func TestPermitGuardAndDo(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	sem := newSem(t, newSession(t, srv.Client, 5*time.Second), "deploy", 2)
	p := mustAcquire(t, ctx, sem)
	if _, err := p.Guard().Do(ctx, clientv3.OpPut("step", "1")); err != nil {
		t.Fatal(err)
	}
	_ = p.Release(ctx)
	if _, err := p.Guard().Do(ctx, clientv3.OpPut("step", "2")); !errors.Is(err, semaphore.ErrNotHeld) {
		t.Fatalf("guarded write after Release = %v", err)
	}
	// Do cancels fn's context when the permit is lost. The key is deleted
	// with the test's context, not fn's: the loss the Delete causes can
	// cancel fn's context before the Delete's answer arrives.
	var cause error
	err := sem.Do(ctx, func(fctx context.Context) error {
		st := inspect(t, srv.Client, "deploy")
		if _, err := srv.Client.Delete(ctx, st.Holders[0].Key); err != nil {
			return err
		}
		<-fctx.Done()
		cause = context.Cause(fctx)
		return fctx.Err()
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(cause, semaphore.ErrKeyDeleted) {
		t.Fatalf("Do = %v, cause %v", err, cause)
	}
	ran := false
	if err := sem.Do(ctx, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do = %v, ran %v", err, ran)
	}
	if n := lineLen(t, srv.Client, "deploy"); n != 0 {
		t.Fatalf("Do left %d keys", n)
	}
}
