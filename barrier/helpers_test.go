package barrier_test

import (
	"context"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	clientv3 "go.etcd.io/etcd/client/v3"
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

// async runs fn in a goroutine and returns its result channel.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

func mustGet(t testing.TB, ch <-chan error, within time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(within):
		t.Fatalf("%s: no result within %v", what, within)
		return nil
	}
}

// mustBlock checks that ch has no result for a while.
func mustBlock(t testing.TB, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s: returned early: %v", what, err)
	case <-time.After(300 * time.Millisecond):
	}
}

// keysUnder counts the keys under prefix.
func keysUnder(t testing.TB, c *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := c.Get(testCtx(t), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}
