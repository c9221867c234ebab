package semaphore_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSession(t testing.TB, c *clientv3.Client, ttl time.Duration) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(testCtx(t), c, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func newSem(t testing.TB, s *concurrency.Session, name string, limit int, opts ...semaphore.Option) *semaphore.Semaphore {
	t.Helper()
	sem, err := semaphore.New(s, name, limit, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sem.Close(context.Background()) })
	return sem
}

func mustAcquire(t testing.TB, ctx context.Context, sem *semaphore.Semaphore) *semaphore.Permit {
	t.Helper()
	p, err := sem.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return p
}

type acquired struct {
	p   *semaphore.Permit
	err error
}

func acquireAsync(ctx context.Context, sem *semaphore.Semaphore) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		p, err := sem.Acquire(ctx)
		ch <- acquired{p, err}
	}()
	return ch
}

func mustGet(t testing.TB, ch <-chan acquired, within time.Duration, what string) acquired {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(within):
		t.Fatalf("%s: no result within %v", what, within)
		return acquired{}
	}
}

func mustWait(t testing.TB, ch <-chan acquired, what string) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("%s: returned early: %v", what, a.err)
	case <-time.After(200 * time.Millisecond):
	}
}

func inspect(t testing.TB, c *clientv3.Client, name string) semaphore.Status {
	t.Helper()
	st, err := semaphore.Inspect(testCtx(t), c, name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func lineLen(t testing.TB, c *clientv3.Client, name string) int {
	st := inspect(t, c, name)
	return len(st.Holders) + len(st.Waiters)
}

// waitLine polls until n keys are in line.
func waitLine(t testing.TB, c *clientv3.Client, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got := lineLen(t, c, name); got == n {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%d keys in line after 20s, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countingClient returns a client whose unary requests are counted in n.
func countingClient(t testing.TB, srv *embedtest.Server, n *atomic.Int64) *clientv3.Client {
	return interceptedClient(t, srv, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		n.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// interceptedClient is a client of srv whose unary requests go through in:
// to count or hold back some of them.
func interceptedClient(t testing.TB, srv *embedtest.Server, in grpc.UnaryClientInterceptor) *clientv3.Client {
	t.Helper()
	c, err := srv.NewClientWith(grpc.WithChainUnaryInterceptor(in))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
