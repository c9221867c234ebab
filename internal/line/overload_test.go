package line_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/session"
)

// overloadingClient is a client of srv whose Txns that write are refused,
// as an overloaded etcd refuses them before proposing ("too many
// requests"), while refuse(n) says so for the nth; it counts those Txns.
func overloadingClient(t *testing.T, srv *embedtest.Server, refuse func(n int64) bool) (*clientv3.Client, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	c := interceptedClient(t, srv, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if tr, ok := req.(*pb.TxnRequest); ok && len(tr.Success) > 0 && tr.Success[0].GetRequestPut() != nil {
			if refuse(n.Add(1)) {
				return rpctypes.ErrGRPCRequestTooManyRequests
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	return c, &n
}

// A Join the server refuses as overloaded is tried again after a pause,
// and lands once: 10,000 waiters joining one line at once made etcd refuse
// joins ("too many requests") and their Lock calls fail.
func TestJoinRetriesWhenOverloaded(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	c, calls := overloadingClient(t, srv, func(n int64) bool { return n <= 3 })
	s := newSession(t, c)
	tk, err := line.Join(testCtx(t), s, "ovl/a", "v", "ovl/", 1)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if got := calls.Load(); got != 4 {
		t.Errorf("the Join Txn was sent %d times, want 4 (3 refused)", got)
	}
	resp, err := srv.Client.Get(testCtx(t), "ovl/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != int64(tk.Token()) {
		t.Fatalf("the line holds %v, want the ticket's key once", resp.Kvs)
	}
}

// A Join refused until its context ends returns the context's error and
// leaves no key.
func TestJoinOverloadedUntilContextEnds(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	c, calls := overloadingClient(t, srv, func(int64) bool { return true })
	s := newSession(t, c)
	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	_, err := line.Join(ctx, s, "ovl/b", "v", "ovl/", 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Join: %v, want context.DeadlineExceeded", err)
	}
	if got := calls.Load(); got < 2 {
		t.Errorf("the Join Txn was sent %d times before the deadline, want it retried", got)
	}
	resp, err := srv.Client.Get(testCtx(t), "ovl/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("the line holds %v, want nothing", resp.Kvs)
	}
}

// A Join whose Txn timed out is tried again; if the timed-out attempt
// landed after all, the retry finds the key and the Join takes it up, else
// the retry creates it: either way one key, the ticket's, and a count of
// the keys ahead as exact as a Join's (a taken-up ticket of a semaphore
// that only knew "someone is ahead" read every key ahead to count them:
// thousands of those at once overloaded etcd). If the revision it was
// created at is compacted, the ticket counts the line when it waits.
func TestJoinRetriesAfterTimeout(t *testing.T) {
	for _, tc := range []struct{ landed, compacted bool }{{true, false}, {false, false}, {true, true}} {
		t.Run(fmt.Sprintf("landed=%v/compacted=%v", tc.landed, tc.compacted), func(t *testing.T) {
			srv := embedtest.Start(t, embedtest.FastTicks())
			var n atomic.Int64
			c := interceptedClient(t, srv, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if tr, ok := req.(*pb.TxnRequest); ok && len(tr.Success) > 0 && tr.Success[0].GetRequestPut() != nil && n.Add(1) == 1 {
					if tc.landed {
						if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
							return err
						}
					}
					if tc.compacted {
						r, err := srv.Client.Put(ctx, "other", "")
						if err != nil {
							return err
						}
						if _, err := srv.Client.Compact(ctx, r.Header.Revision); err != nil {
							return err
						}
					}
					return rpctypes.ErrGRPCTimeout
				}
				return invoker(ctx, method, req, reply, cc, opts...)
			})
			for _, k := range []string{"tmo/x", "tmo/y", "tmo/z"} {
				if _, err := srv.Client.Put(testCtx(t), k, ""); err != nil {
					t.Fatal(err)
				}
			}
			s := newSession(t, c)
			tk, err := line.Join(testCtx(t), s, "tmo/a", "v", "tmo/", 2)
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			if got := n.Load(); got != 2 {
				t.Errorf("the Join Txn was sent %d times, want 2", got)
			}
			resp, err := srv.Client.Get(testCtx(t), "tmo/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 4 || string(resp.Kvs[0].Key) != "tmo/a" ||
				resp.Kvs[0].CreateRevision != int64(tk.Token()) || clientv3.LeaseID(resp.Kvs[0].Lease) != s.Lease() {
				t.Fatalf("the line holds %v, want the ticket's key once, under the session's lease, behind 3", resp.Kvs)
			}
			if tc.compacted {
				ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
				defer cancel()
				if err := tk.Wait(ctx, 4); err != nil {
					t.Fatalf("Wait under a limit of 4 with 3 ahead: %v", err)
				}
			}
			if tk.Ahead() != 3 || !tk.Admitted(4) || tk.Admitted(3) {
				t.Errorf("the ticket counts %d ahead (admitted under a limit of 4: %v, of 3: %v), want exactly 3",
					tk.Ahead(), tk.Admitted(4), tk.Admitted(3))
			}
		})
	}
}

// A client's sessions send at most 8 Joins at a time; the rest wait their
// turn, and every one lands. 10,000 sent at once to one line put tens of
// seconds of work in etcd's apply loop, and every session on the cluster
// missed its renew deadline behind it.
func TestJoinsInFlightBounded(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	var cur, peak atomic.Int64
	c := interceptedClient(t, srv, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if tr, ok := req.(*pb.TxnRequest); ok && len(tr.Success) > 0 && tr.Success[0].GetRequestPut() != nil {
			n := cur.Add(1)
			defer cur.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(20 * time.Millisecond) // a loaded server's answer
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	sessions := []*session.Session{newSession(t, c), newSession(t, c)}
	const joins = 40
	errc := make(chan error, joins)
	for i := range joins {
		go func() {
			_, err := line.Join(testCtx(t), sessions[i%2], fmt.Sprintf("inf/%02d", i), "v", "inf/", 10)
			errc <- err
		}()
	}
	for range joins {
		if err := <-errc; err != nil {
			t.Fatalf("Join: %v", err)
		}
	}
	if got := peak.Load(); got > 8 || got < 2 {
		t.Errorf("%d Joins of one client were in flight at once, want 2 to 8", got)
	}
	resp, err := srv.Client.Get(testCtx(t), "inf/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != joins {
		t.Errorf("the line holds %d keys, want %d", resp.Count, joins)
	}
}
