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
// the retry creates it: either way one key, the ticket's.
func TestJoinRetriesAfterTimeout(t *testing.T) {
	for _, landed := range []bool{true, false} {
		t.Run(fmt.Sprintf("landed=%v", landed), func(t *testing.T) {
			srv := embedtest.Start(t, embedtest.FastTicks())
			var n atomic.Int64
			c := interceptedClient(t, srv, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if tr, ok := req.(*pb.TxnRequest); ok && len(tr.Success) > 0 && tr.Success[0].GetRequestPut() != nil && n.Add(1) == 1 {
					if landed {
						if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
							return err
						}
					}
					return rpctypes.ErrGRPCTimeout
				}
				return invoker(ctx, method, req, reply, cc, opts...)
			})
			s := newSession(t, c)
			tk, err := line.Join(testCtx(t), s, "tmo/a", "v", "tmo/", 1)
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
			if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != int64(tk.Token()) || clientv3.LeaseID(resp.Kvs[0].Lease) != s.Lease() {
				t.Fatalf("the line holds %v, want the ticket's key once, under the session's lease", resp.Kvs)
			}
			if !tk.Admitted(1) {
				t.Errorf("alone in line, the ticket is not admitted (ahead %d)", tk.Ahead())
			}
		})
	}
}
