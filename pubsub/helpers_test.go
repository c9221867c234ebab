package pubsub_test

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/pubsub"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newPubSub(t *testing.T, c *clientv3.Client, opts ...pubsub.Option) *pubsub.Client {
	t.Helper()
	ps, err := pubsub.New(c, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return ps
}

func publish(t *testing.T, ps *pubsub.Client, topic string, msgs ...string) []int64 {
	t.Helper()
	revs := make([]int64, 0, len(msgs))
	for _, m := range msgs {
		rev, err := ps.Publish(testCtx(t), topic, []byte(m))
		if err != nil {
			t.Fatalf("Publish(%q): %v", m, err)
		}
		revs = append(revs, rev)
	}
	return revs
}

// subscribe starts a subscription stopped at the end of the test.
func subscribe(t *testing.T, ps *pubsub.Client, topic string, pos pubsub.Position) *pubsub.Subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	sub, err := ps.Subscribe(ctx, topic, pos)
	if err != nil {
		cancel()
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		for range sub.C() {
		}
	})
	return sub
}

func next(t *testing.T, sub *pubsub.Subscription) pubsub.Event {
	t.Helper()
	select {
	case ev, ok := <-sub.C():
		if !ok {
			t.Fatalf("subscription closed: %v", sub.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return pubsub.Event{}
	}
}

// nothing checks that no event arrives within d.
func nothing(t *testing.T, sub *pubsub.Subscription, d time.Duration) {
	t.Helper()
	select {
	case ev := <-sub.C():
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func wantMsg(t *testing.T, ev pubsub.Event, rev int64, data string) {
	t.Helper()
	if ev.Gap != nil || ev.Revision != rev || string(ev.Data) != data {
		t.Fatalf("event %+v (gap %v), want message %q at %d", ev, ev.Gap, data, rev)
	}
}

// rangeClient is a client made by newClient (a Server's or a Proxy's
// NewClientWith) that shows see each range read it sends, alone or in a
// transaction's success branch. Keys are as sent: on an external cluster,
// under the test's namespace.
func rangeClient(t *testing.T, newClient func(...grpc.DialOption) (*clientv3.Client, error), see func(*pb.RangeRequest)) *clientv3.Client {
	t.Helper()
	show := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		switch r := req.(type) {
		case *pb.RangeRequest:
			see(r)
		case *pb.TxnRequest:
			for _, op := range r.Success {
				if rr := op.GetRequestRange(); rr != nil {
					see(rr)
				}
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c, err := newClient(grpc.WithChainUnaryInterceptor(show))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
