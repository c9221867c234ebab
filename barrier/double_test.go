package barrier_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/barrier"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newDouble(t *testing.T, c *clientv3.Client, name string, n int, value string) *barrier.DoubleBarrier {
	t.Helper()
	d, err := barrier.NewDouble(newSession(t, c, 5*time.Second), name, n, barrier.WithValue(value))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

// Nobody passes Enter before n have entered, nobody passes Leave before all
// have left, and no key is left behind; the name serves round after round.
func TestDoubleBarrierRounds(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	const n = 3
	var ds []*barrier.DoubleBarrier
	for i := range n {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, newDouble(t, c, "phase", n, fmt.Sprintf("p%d", i)))
	}
	for round := range 3 {
		var enters []<-chan error
		for _, d := range ds[:n-1] {
			enters = append(enters, async(func() error { return d.Enter(ctx) }))
		}
		for _, e := range enters {
			mustBlock(t, e, fmt.Sprintf("round %d: Enter with %d of %d", round, n-1, n))
		}
		enters = append(enters, async(func() error { return ds[n-1].Enter(ctx) }))
		for _, e := range enters {
			if err := mustGet(t, e, 5*time.Second, "Enter"); err != nil {
				t.Fatalf("round %d: Enter: %v", round, err)
			}
		}
		var leaves []<-chan error
		for _, d := range ds[1:] {
			leaves = append(leaves, async(func() error { return d.Leave(ctx) }))
		}
		for _, l := range leaves {
			mustBlock(t, l, fmt.Sprintf("round %d: Leave with one still working", round))
		}
		leaves = append(leaves, async(func() error { return ds[0].Leave(ctx) }))
		for _, l := range leaves {
			if err := mustGet(t, l, 5*time.Second, "Leave"); err != nil {
				t.Fatalf("round %d: Leave: %v", round, err)
			}
		}
		if k := keysUnder(t, srv.Client, "phase/"); k != 0 {
			t.Fatalf("round %d: %d keys left", round, k)
		}
	}
}

// A participant cut off after entering counts as left once its session is
// lost: the others' Leave returns within the TTL (plus slack), naming it.
func TestDoubleBarrierParticipantCutOff(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	const ttl = 2 * time.Second
	p, cut := embedtest.NewProxyClient(t, srv.Endpoints[0])
	a := newDouble(t, srv.Client, "phase", 3, "a")
	b := newDouble(t, srv.Client, "phase", 3, "b")
	cs := newSession(t, cut, ttl)
	c, _ := barrier.NewDouble(cs, "phase", 3, barrier.WithValue("c"))
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	enters := []<-chan error{
		async(func() error { return a.Enter(ctx) }),
		async(func() error { return b.Enter(ctx) }),
		async(func() error { return c.Enter(ctx) }),
	}
	for _, e := range enters {
		if err := mustGet(t, e, 5*time.Second, "Enter"); err != nil {
			t.Fatal(err)
		}
	}
	p.Blackhole()
	cut0 := time.Now()
	la := async(func() error { return a.Leave(ctx) })
	lb := async(func() error { return b.Leave(ctx) })
	for _, l := range []<-chan error{la, lb} {
		err := mustGet(t, l, ttl+5*time.Second, "Leave with a participant cut off")
		var lost *barrier.LostError
		if !errors.As(err, &lost) || !errors.Is(err, barrier.ErrParticipantLost) || !slices.Equal(lost.Values, []string{"c"}) {
			t.Fatalf("Leave = %v, want a LostError naming c", err)
		}
	}
	t.Logf("the others left %v after c was cut off (TTL %v)", time.Since(cut0).Round(time.Millisecond), ttl)
	select {
	case <-cs.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the cut-off participant's session is still live")
	}
	if err := c.Leave(ctx); err == nil {
		t.Fatal("Leave of a participant whose session was lost succeeded")
	}
	p.Unblackhole()
	if k := keysUnder(t, srv.Client, "phase/"); k != 0 {
		t.Fatalf("%d keys left", k)
	}
}

// A participant lost before the round is ready does not count: the others
// wait for another to enter.
func TestDoubleBarrierLostBeforeReady(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newDouble(t, srv.Client, "phase", 3, "a")
	bs := newSession(t, srv.Client, 5*time.Second)
	b, _ := barrier.NewDouble(bs, "phase", 3, barrier.WithValue("b"))
	ea := async(func() error { return a.Enter(ctx) })
	eb := async(func() error { return b.Enter(ctx) })
	mustBlock(t, ea, "Enter with 2 of 3")
	if _, err := srv.Client.Revoke(ctx, bs.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, eb, 5*time.Second, "Enter of a lost participant"); !errors.Is(err, concurrency.ErrLeaseExpired) {
		t.Fatalf("Enter of a participant whose lease was revoked = %v", err)
	}
	c := newDouble(t, srv.Client, "phase", 3, "c")
	ec := async(func() error { return c.Enter(ctx) })
	mustBlock(t, ea, "Enter with 2 of 3 after one was lost")
	mustBlock(t, ec, "Enter with 2 of 3 after one was lost")
	d := newDouble(t, srv.Client, "phase", 3, "d")
	if err := d.Enter(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range []<-chan error{ea, ec} {
		if err := mustGet(t, e, 5*time.Second, "Enter"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, x := range []*barrier.DoubleBarrier{a, c, d} {
		wg.Go(func() { errs[i] = x.Leave(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("Leave = %v (b was lost before the round was ready: not part of it)", err)
		}
	}
}

// A participant arriving while a round is in progress joins it: its Enter
// returns at once and the others' Leave waits for it.
func TestDoubleBarrierLatecomer(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newDouble(t, srv.Client, "phase", 2, "a")
	b := newDouble(t, srv.Client, "phase", 2, "b")
	ea := async(func() error { return a.Enter(ctx) })
	if err := b.Enter(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mustGet(t, ea, 5*time.Second, "Enter"); err != nil {
		t.Fatal(err)
	}
	late := newDouble(t, srv.Client, "phase", 2, "late")
	if err := mustGet(t, async(func() error { return late.Enter(ctx) }), 5*time.Second, "a latecomer's Enter"); err != nil {
		t.Fatal(err)
	}
	la := async(func() error { return a.Leave(ctx) })
	lb := async(func() error { return b.Leave(ctx) })
	mustBlock(t, la, "Leave while the latecomer works")
	mustBlock(t, lb, "Leave while the latecomer works")
	if err := late.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range []<-chan error{la, lb} {
		if err := mustGet(t, l, 5*time.Second, "Leave"); err != nil {
			t.Fatal(err)
		}
	}
}

// A cancelled Enter returns ctx.Err() and leaves no key; calls out of turn
// are refused.
func TestDoubleBarrierCancelAndMisuse(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	if _, err := barrier.NewDouble(s, "phase", 0); !errors.Is(err, barrier.ErrInvalidCount) {
		t.Fatalf("NewDouble(n=0) = %v", err)
	}
	if _, err := barrier.NewDouble(s, "", 2); !errors.Is(err, barrier.ErrInvalidName) {
		t.Fatalf("NewDouble(\"\") = %v", err)
	}
	d, _ := barrier.NewDouble(s, "phase", 2)
	if err := d.Leave(ctx); !errors.Is(err, barrier.ErrNotEntered) {
		t.Fatalf("Leave before Enter = %v", err)
	}
	ectx, cancel := context.WithCancel(ctx)
	e := async(func() error { return d.Enter(ectx) })
	mustBlock(t, e, "Enter with 1 of 2")
	if err := d.Enter(ctx); !errors.Is(err, barrier.ErrInProgress) {
		t.Fatalf("Enter during Enter = %v", err)
	}
	cancel()
	if err := mustGet(t, e, 5*time.Second, "cancelled Enter"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Enter = %v", err)
	}
	if k := keysUnder(t, srv.Client, "phase/"); k != 0 {
		t.Fatalf("a cancelled Enter left %d keys", k)
	}
	one, _ := barrier.NewDouble(s, "solo", 1)
	if err := one.Enter(ctx); err != nil {
		t.Fatal(err)
	}
	if err := one.Enter(ctx); !errors.Is(err, barrier.ErrAlreadyEntered) {
		t.Fatalf("second Enter = %v", err)
	}
	if err := one.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := one.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := one.Enter(ctx); !errors.Is(err, barrier.ErrClosed) {
		t.Fatalf("Enter after Close = %v", err)
	}
	if k := keysUnder(t, srv.Client, "solo/.dbarrier/p/"); k != 0 {
		t.Fatalf("Close left %d participant keys", k)
	}
}
