package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSession(t *testing.T, c *clientv3.Client, ttl time.Duration) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(testCtx(t), c, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func newMutex(t *testing.T, s *concurrency.Session, name string, opts ...lock.Option) *lock.Mutex {
	t.Helper()
	m, err := lock.NewMutex(s, name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// lockAsync starts Lock in a goroutine and returns its result channel.
func lockAsync(ctx context.Context, m interface{ Lock(context.Context) error }) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- m.Lock(ctx) }()
	return ch
}

func mustGet(t *testing.T, ch <-chan error, within time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(within):
		t.Fatalf("%s: no result within %v", what, within)
		return nil
	}
}

func mustWait(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s: returned early: %v", what, err)
	case <-time.After(200 * time.Millisecond):
	}
}

func lineLen(t *testing.T, c *clientv3.Client, name string) int {
	t.Helper()
	st, err := lock.Inspect(testCtx(t), c, name)
	if err != nil {
		t.Fatal(err)
	}
	return len(st.Holders) + len(st.Waiters)
}
