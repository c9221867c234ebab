package concurrency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
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
		if !errors.Is(cause, concurrency.ErrLeaseExpired) {
			t.Fatalf("first run's cause = %v, want the session's ErrLeaseExpired", cause)
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

// A grant that goes unanswered (etcd unreachable, the connection not yet
// known dead) fails by the renew deadline rather than hanging until the
// connection's keepalive gives up: a lease granted later would be too late
// to use, and Supervise tries again.
func TestNewSessionGrantBounded(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	p, pc := embedtest.NewProxyClient(t, srv.Endpoints[0])
	p.Blackhole()
	defer p.Unblackhole()
	const ttl = 2 * time.Second
	start := time.Now()
	_, err := concurrency.NewSession(testCtx(t), pc, concurrency.WithTTL(ttl))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NewSession while cut off = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > ttl+time.Second {
		t.Fatalf("NewSession while cut off took %v (TTL %v)", d, ttl)
	}
}

// A client cut off for several TTLs loses its session; once the network
// heals, Supervise starts a new one within a bounded time.
func TestSuperviseRecoversAfterLongCut(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	p, pc := embedtest.NewProxyClient(t, srv.Endpoints[0])
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
	time.Sleep(3 * ttl) // lost after ttl-margin; grants sent after that go unanswered
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
