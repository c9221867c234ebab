package concurrency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestSuperviseRestartsAfterLoss(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	runs := make(chan clientv3.LeaseID, 4)
	causes := make(chan error, 4)
	done := make(chan error, 1)
	go func() {
		done <- concurrency.Supervise(ctx, srv.Client, func(ctx context.Context, s *concurrency.Session) error {
			runs <- s.Lease()
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		}, concurrency.WithTTL(2*time.Second))
	}()
	first := <-runs
	if _, err := srv.Client.Revoke(ctx, first); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-causes:
		if !errors.Is(cause, concurrency.ErrSessionLost) {
			t.Fatalf("first run's cause = %v, want ErrSessionLost", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first run not cancelled after its lease was revoked")
	}
	select {
	case second := <-runs:
		if second == first {
			t.Fatal("restarted with the lost lease")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not restarted after loss")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Supervise = %v, want context.Canceled", err)
	}
}

func TestSuperviseReturnsFnError(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	boom := errors.New("boom")
	err := concurrency.Supervise(testCtx(t), srv.Client, func(ctx context.Context, s *concurrency.Session) error {
		return boom
	}, concurrency.WithTTL(2*time.Second))
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	if err := concurrency.Supervise(testCtx(t), srv.Client, nil, concurrency.WithTTL(1500*time.Millisecond)); !errors.Is(err, concurrency.ErrInvalidTTL) {
		t.Fatalf("bad TTL: got %v", err)
	}
}

// A client cut off for several TTLs loses its session; requests sent during
// the cut are dropped with it and never answered. Once the network heals,
// Supervise starts a new session within a bounded time rather than waiting
// on a grant that will never be answered.
func TestSuperviseRecoversAfterLongCut(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	pc, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	const ttl = 2 * time.Second
	runs := make(chan clientv3.LeaseID, 16)
	done := make(chan error, 1)
	go func() {
		done <- concurrency.Supervise(ctx, pc, func(ctx context.Context, s *concurrency.Session) error {
			runs <- s.Lease()
			<-ctx.Done()
			return ctx.Err()
		}, concurrency.WithTTL(ttl))
	}()
	first := <-runs
	p.Blackhole()
	time.Sleep(3 * ttl) // lost after ttl-margin; grants sent after that are dropped
	p.Unblackhole()
	healed := time.Now()
	select {
	case second := <-runs:
		if second == first {
			t.Fatal("restarted with the lost lease")
		}
		t.Logf("new session %v after the network healed", time.Since(healed))
	case <-time.After(3 * ttl):
		t.Fatalf("no new session %v after the network healed", 3*ttl)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Supervise = %v, want context.Canceled", err)
	}
}
