package concurrency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/session"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSession(t *testing.T, c *clientv3.Client, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(testCtx(t), c, opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func waitClosed(t *testing.T, ch <-chan struct{}, within time.Duration, what string) time.Time {
	t.Helper()
	select {
	case <-ch:
		return time.Now()
	case <-time.After(within):
		t.Fatalf("%s: not closed within %v", what, within)
		return time.Time{}
	}
}

func TestSessionRejectsBadTTL(t *testing.T) {
	srv := embedtest.Start(t) // default settings: server minimum TTL is 2s
	ctx := testCtx(t)
	for _, ttl := range []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond} {
		if _, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(ttl)); !errors.Is(err, concurrency.ErrInvalidTTL) {
			t.Errorf("TTL %v: got %v, want ErrInvalidTTL", ttl, err)
		}
	}
	_, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(time.Second))
	if !errors.Is(err, concurrency.ErrInvalidTTL) {
		t.Fatalf("TTL 1s on a default server: got %v, want ErrInvalidTTL", err)
	}
	leases, err := srv.Client.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Errorf("rejected session left %d leases behind", len(leases.Leases))
	}
	if _, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(2*time.Second), concurrency.WithSafetyMargin(2*time.Second)); !errors.Is(err, concurrency.ErrInvalidTTL) {
		t.Errorf("margin = TTL: got %v, want ErrInvalidTTL", err)
	}
}

func TestSessionKeepsLeaseAlive(t *testing.T) {
	embedtest.RequireEmbedded(t, "FastTicks' 1 s minimum lease TTL")
	srv := embedtest.Start(t, embedtest.FastTicks())
	s := newSession(t, srv.Client, concurrency.WithTTL(time.Second))
	ctx := testCtx(t)
	// Three TTLs later the lease must still be there.
	select {
	case <-s.Done():
		t.Fatalf("session lost: %v", s.Err())
	case <-time.After(3 * time.Second):
	}
	ttl, err := srv.Client.TimeToLive(ctx, s.Lease())
	if err != nil || ttl.TTL < 0 { // TTL is whole seconds left, -1 when gone
		t.Fatalf("lease not alive after 3 TTLs: %v %v", ttl, err)
	}
}

func TestSessionCloseRevokesAndIsIdempotent(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, "k", "v", clientv3.WithLease(s.Lease())); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitClosed(t, s.Done(), time.Second, "Done after Close")
	if !errors.Is(s.Err(), concurrency.ErrSessionClosed) {
		t.Errorf("Err = %v, want ErrSessionClosed", s.Err())
	}
	resp, err := srv.Client.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("key under closed session's lease still there: %v %v", resp, err)
	}
}

func TestSessionLostOnRevoke(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	if _, err := srv.Client.Revoke(testCtx(t), s.Lease()); err != nil {
		t.Fatal(err)
	}
	// The next keepalive (every TTL/3) learns the lease is gone.
	waitClosed(t, s.Done(), 5*time.Second, "Done after revoke")
	if !errors.Is(s.Err(), concurrency.ErrLeaseExpired) {
		t.Errorf("Err = %v, want ErrLeaseExpired", s.Err())
	}
}

// A client cut off from etcd must learn it lost its lease before the server
// lets the lease go (and with it every resource held under it).
func TestSessionLostBeforeServerExpiry(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	s := newSession(t, cut, concurrency.WithTTL(2*time.Second))
	if _, err := cut.Put(ctx, "held", "x", clientv3.WithLease(s.Lease())); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	waitClosed(t, s.Done(), 5*time.Second, "Done after cut-off")
	if !errors.Is(s.Err(), concurrency.ErrRenewDeadline) {
		t.Errorf("Err = %v, want ErrRenewDeadline", s.Err())
	}
	// Done closed: the server must still hold the key (nobody else could
	// have taken the resource yet).
	resp, err := srv.Client.Get(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("lease expired on the server before the session counted itself lost")
	}
	// And the server does expire it afterwards.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := srv.Client.Get(ctx, "held")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease never expired on the server")
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Unblackhole()
}

func TestSessionResumeLease(t *testing.T) {
	embedtest.RequireEmbedded(t, "FastTicks' 1 s minimum lease TTL")
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	a.Orphan() // a process that stops without revoking
	b := newSession(t, srv.Client, concurrency.WithLease(a.Lease()))
	if b.Lease() != a.Lease() || b.TTL() != time.Second {
		t.Fatalf("resumed lease %x ttl %v, want %x 1s", b.Lease(), b.TTL(), a.Lease())
	}
	select {
	case <-b.Done():
		t.Fatalf("resumed session lost: %v", b.Err())
	case <-time.After(2500 * time.Millisecond):
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithLease(a.Lease())); !errors.Is(err, concurrency.ErrLeaseExpired) {
		t.Fatalf("resuming a revoked lease: got %v, want ErrLeaseExpired", err)
	}
}

// Closing a session whose client was closed first returns at once (its
// lease expires by itself) instead of waiting out the client's retries.
func TestSessionCloseAfterClientClosed(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	c, err := srv.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(t, c, concurrency.WithTTL(2*time.Second))
	_ = c.Close()
	start := time.Now()
	err = s.Close(context.Background())
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v", took)
	}
	if err == nil {
		t.Fatal("Close = nil, want an error saying the lease was not revoked")
	}
}

// Go runs a function the session owns: its context ends with the session,
// Close waits for it, and a closed session runs nothing.
func TestSessionGo(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	s, err := concurrency.NewSession(testCtx(t), srv.Client, concurrency.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	started, ended := make(chan struct{}), make(chan struct{})
	if !(*session.Session)(s).Go(func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // Close must wait for this
		close(ended)
	}) {
		t.Fatal("Go on a live session ran nothing")
	}
	<-started
	if err := s.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Close returned before the session's function did")
	}
	if (*session.Session)(s).Go(func(context.Context) { t.Error("ran on a closed session") }) {
		t.Fatal("Go on a closed session reported true")
	}
}
