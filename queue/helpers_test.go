package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// recorded is what a test's client saw, taken in batches.
type recorded[T any] struct {
	mu   sync.Mutex
	seen []T
}

func (r *recorded[T]) add(v ...T) {
	r.mu.Lock()
	r.seen = append(r.seen, v...)
	r.mu.Unlock()
}

// take returns what was recorded since the last take.
func (r *recorded[T]) take() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

// interceptedClient is a client of srv on its own connection that shows
// each unary request and its answer to saw, after the server answered;
// saw returns the error the caller gets (err, or one that loses the
// answer).
func interceptedClient(t *testing.T, srv *embedtest.Server, saw func(req, reply any, err error) error) *clientv3.Client {
	t.Helper()
	c, err := srv.NewClientWith(grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return saw(req, reply, invoker(ctx, method, req, reply, cc, opts...))
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// claimWant claims an item from cons and wants its payload to be want.
func claimWant(t *testing.T, ctx context.Context, cons *queue.Consumer, want string) *queue.Claim {
	t.Helper()
	cl, err := cons.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(cl.Payload()); got != want {
		t.Fatalf("claimed %s, want %s", got, want)
	}
	return cl
}

// claimAck claims an item from cons, wants its payload to be want, and
// acks it.
func claimAck(t *testing.T, ctx context.Context, cons *queue.Consumer, want string) {
	t.Helper()
	if err := claimWant(t, ctx, cons, want).Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

// losingClient is an interceptedClient whose next transaction that writes
// a claim key (a claim, an ack, a nack), once lose is set, lands and has
// its answer lost (lose is cleared). A look for orphans in between does
// not take the loss.
func losingClient(t *testing.T, srv *embedtest.Server, lose *atomic.Bool) *clientv3.Client {
	return interceptedClient(t, srv, func(req, _ any, err error) error {
		if tr, ok := req.(*pb.TxnRequest); ok && err == nil && writesClaim(tr) && lose.CompareAndSwap(true, false) {
			return errors.New("answer lost")
		}
		return err
	})
}

// writesClaim reports whether tr puts or deletes a claim key.
func writesClaim(tr *pb.TxnRequest) bool {
	for _, op := range tr.Success {
		if p := op.GetRequestPut(); p != nil && strings.Contains(string(p.Key), "/.q/c/") {
			return true
		}
		if d := op.GetRequestDeleteRange(); d != nil && strings.Contains(string(d.Key), "/.q/c/") {
			return true
		}
	}
	return false
}
