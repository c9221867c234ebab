package queue_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// rangeCountingClient is a client of srv on its own connection that records
// in rc the Count of each range its Txns read: how many keys etcd counted
// (and so visited) for it.
func rangeCountingClient(t *testing.T, srv *embedtest.Server, rc *recorded[int64]) *clientv3.Client {
	t.Helper()
	return interceptedClient(t, srv, func(_, reply any, err error) error {
		if tr, ok := reply.(*pb.TxnResponse); ok && err == nil {
			for _, r := range tr.Responses {
				if rr := r.GetResponseRange(); rr != nil {
					rc.add(rr.Count)
				}
			}
		}
		return err
	})
}

// deepDepth is the backlog of the window tests: far more items than a
// window holds, so a read of the whole queue is told from a window's.
const deepDepth = 4000

// windowMax is the most keys a window read may count once it has settled
// (the queue's windows aim at 64 and shrink above 256).
const windowMax = 256

func payloadN(prefix string) func(int) []byte {
	return func(i int) []byte { return fmt.Appendf(nil, "%s-%d", prefix, i) }
}

// TestClaimReadsAWindowOfADeepQueue: with 4,000 items waiting, claims and
// acks (after a few reads to size the window) read ranges in which etcd
// counts a few dozen keys, not the whole backlog, and still deliver in
// FIFO order. Reading the whole head (as before the window) counts every
// item: this fails.
func TestClaimReadsAWindowOfADeepQueue(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, deepDepth, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	var rc recorded[int64]
	c := rangeCountingClient(t, srv, &rc)
	s := newSession(t, c, 10*time.Second)
	cons := newQueue(t, c).Consumer(s)
	const warmup, claims = 8, 40
	for i := range claims {
		if i == warmup {
			rc.take()
		}
		claimAck(t, ctx, cons, fmt.Sprintf("item-%d", i))
	}
	counts := rc.take()
	if len(counts) == 0 {
		t.Fatal("no ranges read")
	}
	for _, n := range counts {
		if n > windowMax {
			t.Fatalf("a read after warm-up counted %d keys (of %d waiting), want at most %d: %v", n, deepDepth-warmup, windowMax, counts)
		}
	}
}

// TestWindowKeepsPriorityOrder: in a deep queue read through windows, an
// item of a higher priority enqueued since goes first, an item nacked goes
// back to its place, and once the higher priorities are drained the
// window finds the lower ones (past its end), all in order.
func TestWindowKeepsPriorityOrder(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, deepDepth, 100, payloadN("low"), 0); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		enqueue(t, q, fmt.Sprintf("high-%d", i), queue.WithPriority(9))
	}
	c, err := srv.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(t, c, 10*time.Second)
	cons := newQueue(t, c).Consumer(s)
	claim := func(want string) *queue.Claim {
		t.Helper()
		return claimWant(t, ctx, cons, want)
	}
	ack := func(cl *queue.Claim) {
		t.Helper()
		if err := cl.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		ack(claim(fmt.Sprintf("high-%d", i)))
	}
	for i := range 30 {
		ack(claim(fmt.Sprintf("low-%d", i)))
	}
	// The window now holds a stretch of the low items.
	enqueue(t, q, "mid", queue.WithPriority(5))
	ack(claim("mid"))
	cl := claim("low-30")
	if err := cl.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 60; i++ {
		ack(claim(fmt.Sprintf("low-%d", i)))
	}
}

// TestDelayedBacklogIsNotRead: 4,000 items delayed by an hour beside a few
// ready ones: claiming the ready ones reads only the delayed items already
// due (none), not the backlog; a delayed item due soon is still promoted
// and claimed when it is due.
func TestDelayedBacklogIsNotRead(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, deepDepth, 100, payloadN("later"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := q.Preload(ctx, 20, 100, payloadN("now"), 0); err != nil {
		t.Fatal(err)
	}
	var rc recorded[int64]
	c := rangeCountingClient(t, srv, &rc)
	s := newSession(t, c, 10*time.Second)
	cons := newQueue(t, c).Consumer(s)
	var counts []int64
	for i := range 20 {
		cl, err := cons.Claim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(cl.Payload()), fmt.Sprintf("now-%d", i); got != want {
			t.Fatalf("claim %d: %s, want %s", i, got, want)
		}
		if err := cl.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		if i < 19 { // the last ack finds no ready item left
			counts = append(counts, rc.take()...)
		}
	}
	if len(counts) == 0 {
		t.Fatal("no ranges read")
	}
	for _, n := range counts {
		if n > windowMax {
			t.Fatalf("a read while ready items were left counted %d keys, want at most %d: %v", n, windowMax, counts)
		}
	}
	enqueue(t, q, "soon", queue.WithDelay(300*time.Millisecond))
	cl, err := cons.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(cl.Payload()); got != "soon" {
		t.Fatalf("claimed %s, want soon", got)
	}
}

// A claim spreading out after a lost race picks among the items of the
// head's priority only.
func TestSamePriority(t *testing.T) {
	q, _ := queue.New(nil, "sp")
	ready := queue.ReadyKeysForTest(q, []int{5, 5, 5, 3, 3})
	if n := queue.SamePriority(ready); n != 3 {
		t.Fatalf("SamePriority = %d, want 3", n)
	}
	if n := queue.SamePriority(ready[3:]); n != 2 {
		t.Fatalf("SamePriority of the rest = %d, want 2", n)
	}
}
