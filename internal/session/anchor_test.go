package session

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/embedtest"
)

// streamCountingClient is a client of endpoint that counts the
// LeaseKeepAlive streams it opens.
func streamCountingClient(t *testing.T, endpoint string, opened *atomic.Int64) *clientv3.Client {
	return streamInterceptedClient(t, endpoint, func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method == "/etcdserverpb.Lease/LeaseKeepAlive" {
			opened.Add(1)
		}
		return streamer(ctx, desc, cc, method, opts...)
	})
}

// streamInterceptedClient is a client of endpoint whose streams go through
// in.
func streamInterceptedClient(t *testing.T, endpoint string, in grpc.StreamClientInterceptor) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(in)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// renewedSince waits until every session has had a keepalive sent after
// since acknowledged.
func renewedSince(t *testing.T, ss []*Session, since time.Time, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, s := range ss {
		for s.confirmed.Load() <= since.UnixNano() {
			if err := s.Err(); err != nil {
				t.Fatalf("session lost: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("lease %x not renewed within %v", int64(s.id), within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// serverWatchers is the server's watcher count once it has been steady
// for 300 ms.
func serverWatchers(t *testing.T, srv *embedtest.Server) float64 {
	t.Helper()
	if embedtest.External() {
		return 0 // one member's figure, of every test's watchers
	}
	last, steady := -1.0, 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		g, err := srv.Gauges(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w := g["etcd_debugging_mvcc_watcher_total"]
		if w == last && w > 0 {
			if steady++; steady == 3 {
				return w
			}
		} else {
			steady = 0
		}
		last = w
	}
	t.Fatal("the server's watcher count did not settle")
	return 0
}

// The sessions of a client share one anchor watch, which ends with the
// last of them; each keeps its own keepalive stream (see sendQuantum).
func TestSessionsShareAnAnchor(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	var opened atomic.Int64
	c := streamCountingClient(t, srv.Endpoints[0], &opened)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const n = 20
	var ss []*Session
	for range n {
		s, err := New(ctx, c, Config{TTL: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	defer func() {
		for _, s := range ss {
			_ = s.Close(context.Background())
		}
	}()
	renewedSince(t, ss, time.Now(), 3*time.Second)
	if w := serverWatchers(t, srv); !embedtest.External() && w != 1 {
		t.Fatalf("%d sessions keep %v watchers at the server, want 1 (the client's anchor)", n, w)
	}
	if got := opened.Load(); got != n {
		t.Fatalf("%d sessions opened %d keepalive streams, want one each", n, got)
	}
	for _, s := range ss {
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	anchors.mu.Lock()
	left := len(anchors.m)
	anchors.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d anchors left after every session closed", left)
	}
}

// Keepalives are sent on multiples of sendQuantum, so a client's sessions
// send in bursts, never later than interval after the last send.
func TestUntilNextSendAligns(t *testing.T) {
	for _, interval := range []time.Duration{time.Second, 3333 * time.Millisecond, 10 * time.Second} {
		for range 50 {
			now := time.Now()
			d := untilNextSend(interval)
			at := now.Add(d)
			if d > interval || d <= interval/2 {
				t.Fatalf("interval %v: next send in %v", interval, d)
			}
			off := at.Sub(at.Truncate(sendQuantum))
			if off = min(off, sendQuantum-off); off > 5*time.Millisecond {
				t.Fatalf("interval %v: next send %v off a multiple of %v", interval, off, sendQuantum)
			}
			time.Sleep(time.Duration(now.UnixNano()%7) * time.Millisecond)
		}
	}
}
