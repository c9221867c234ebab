package line_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newSession is a session closed when the test ends, as the engine the
// line works on.
func newSession(t *testing.T, c *clientv3.Client, opts ...concurrency.SessionOption) *session.Session {
	t.Helper()
	s, err := concurrency.NewSession(testCtx(t), c, opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return (*session.Session)(s)
}

func waitClosed(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("%s: not closed within %v", what, within)
	}
}
