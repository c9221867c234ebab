package console_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/cmd/concord/console"
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
	c, inspects := readsCounted(t, p.NewClientWith, "news") // the console's reads of the topic
	// No polls: a poll reads every marked recipe, which would hide a
	// deferred read nobody scheduled.
	_, ts, _ := serve(t, c, console.WithPollInterval(time.Hour))
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

// A recipe whose read fails is read again after a backoff, not at every
// change of another recipe (each change asked for a read in 25 ms).
func TestFailingReadBacksOff(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	c, reads := readsCounted(t, srv.NewClientWith, "bad") // the console's reads of the broken topic
	ps, err := pubsub.New(srv.Client)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Publish(ctx, "bad", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, "bad/.trim", "not a trim record"); err != nil { // Inspect fails
		t.Fatal(err)
	}
	_, ts, logs := serve(t, c, console.WithPollInterval(time.Hour))
	evs := openEvents(t, ts)
	defer evs.close()
	if _, err := ps.Publish(ctx, "news", []byte("first")); err != nil {
		t.Fatal(err)
	}
	evs.next(t, "topics", 10*time.Second, containsAll("first"))
	before := reads.Load()
	const burst = 2 * time.Second
	for stop := time.Now().Add(burst); time.Now().Before(stop); {
		if _, err := ps.Publish(ctx, "news", []byte("more")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	n := reads.Load() - before
	t.Logf("the broken topic read %d times during a %v burst of other changes", n, burst)
	if before == 0 || !strings.Contains(logs.String(), "read failed") {
		t.Fatalf("the broken topic's read did not fail (%d reads): logs %s", before, logs)
	}
	if n > 10 { // backoff 100 ms, doubling to 2 s: about 5
		t.Fatalf("the broken topic read %d times during a %v burst, want at most 10", n, burst)
	}
}

// readsCounted is a client made by newClient that counts its reads of
// topic's status (pubsub.Inspect's first request reads its mode record;
// on an external cluster the key is under the test's namespace).
func readsCounted(t *testing.T, newClient func(...grpc.DialOption) (*clientv3.Client, error), topic string) (*clientv3.Client, *atomic.Int64) {
	t.Helper()
	n := &atomic.Int64{}
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*pb.TxnRequest); ok {
			for _, op := range r.Success {
				if strings.HasSuffix(string(op.GetRequestRange().GetKey()), topic+"/.mode") {
					n.Add(1)
				}
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c, err := newClient(grpc.WithChainUnaryInterceptor(count))
	if err != nil {
		t.Fatal(err)
	}
	return c, n
}
