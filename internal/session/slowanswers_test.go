package session

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/embedtest"
)

// lateStream is a LeaseKeepAlive stream whose answers reach the session
// *late after they arrive.
type lateStream struct {
	grpc.ClientStream
	late *atomic.Int64
}

func (s *lateStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if d := time.Duration(s.late.Load()); err == nil && d > 0 {
		time.Sleep(d)
	}
	return err
}

// lateAnswersClient is a client of endpoint whose keepalive answers are
// held *late before the session sees them, as a server slow under load
// answers late.
func lateAnswersClient(t *testing.T, endpoint string, late *atomic.Int64) *clientv3.Client {
	return streamInterceptedClient(t, endpoint, func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Lease/LeaseKeepAlive" {
			return cs, err
		}
		return &lateStream{ClientStream: cs, late: late}, nil
	})
}

// Keepalive answers that come later than the stall bound (half an
// interval) but well within the TTL still renew the session. A server
// slow under load answers every keepalive late; a session that dropped a
// stalled stream's answers when it opened a new one counted none of them
// and lost itself to its own renew deadline, although the server had
// renewed the lease each time (10,000 semaphore waiters joining at once).
func TestLateAnswersStillRenew(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	var late atomic.Int64
	c := lateAnswersClient(t, srv.Endpoints[0], &late)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, c, Config{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	// Every answer 500 ms late: past the stall bound (333 ms at this TTL),
	// well within the renew deadline (1.6 s after each send).
	late.Store(int64(500 * time.Millisecond))
	start := time.Now()
	select {
	case <-s.Done():
		t.Fatalf("session lost %v after its answers slowed: %v", time.Since(start).Round(time.Millisecond), s.Err())
	case <-time.After(4 * time.Second):
	}
	renewedSince(t, []*Session{s}, start.Add(3*time.Second), 2*time.Second)
	late.Store(0)
}
