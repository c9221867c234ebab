package console_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/pubsub"
)

// A recipe that changes all the time and takes long to read is read again
// no sooner than ten times its last read's duration: a busy topic does not
// keep the console reading it back to back (at 10,000 retained messages
// each read cost the server 8 ms of CPU). Other recipes' changes still
// reach the page at once, and the topic's last change is shown.
func TestBusyCostlyRecipeReadLessOften(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	var inspects atomic.Int64 // the console's reads of the topic
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*pb.TxnRequest); ok {
			for _, op := range r.Success {
				// On an external cluster, under the test's namespace.
				if strings.HasSuffix(string(op.GetRequestRange().GetKey()), "news/.mode") {
					inspects.Add(1)
				}
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c, err := p.NewClientWith(grpc.WithChainUnaryInterceptor(count))
	if err != nil {
		t.Fatal(err)
	}
	_, ts, _ := serve(t, c)
	evs := openEvents(t, ts)
	defer evs.close()
	ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Publish(ctx, "news", []byte("first")); err != nil {
		t.Fatal(err)
	}
	evs.next(t, "topics", 10*time.Second, containsAll("first"))
	// Every answer to the console 15 ms late: an Inspect (three requests)
	// takes 45 ms or more, so the topic is read at most every 450 ms.
	p.DelayAnswers(15*time.Millisecond, 0)
	defer p.Undelay()
	m, err := lock.NewMutex(newSession(t, srv.Client), "nightly", lock.WithValue("worker-7"))
	if err != nil {
		t.Fatal(err)
	}
	before := inspects.Load()
	const burst = 2 * time.Second
	stop := time.Now().Add(burst)
	done := make(chan error, 1)
	go func() {
		for i := 0; time.Now().Before(stop); i++ {
			if _, err := ps.Publish(ctx, "news", []byte(fmt.Sprint("message ", i))); err != nil {
				done <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		done <- nil
	}()
	time.Sleep(burst / 2)
	start := time.Now()
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	evs.next(t, "locks", 5*time.Second, containsAll("worker-7"))
	if d := time.Since(start); d > time.Second {
		t.Errorf("a lock taken during the burst reached the page after %v, want under 1s", d)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	read := inspects.Load() - before
	if _, err := ps.Publish(ctx, "news", []byte("final")); err != nil {
		t.Fatal(err)
	}
	evs.next(t, "topics", 5*time.Second, containsAll("final"))
	t.Logf("the topic read %d times during a %v burst of publishes", read, burst)
	if inspects.Load() == 0 {
		t.Fatal("no read of the topic seen")
	}
	if read > 8 {
		t.Fatalf("the topic read %d times during a %v burst, want at most 8 (one per 450 ms, and the rounds around)", read, burst)
	}
}
