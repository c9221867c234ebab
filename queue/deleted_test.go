package queue_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// readyRel is key after the ready directory, or false if it is not in it.
func readyRel(key []byte) (string, bool) {
	_, rel, ok := strings.Cut(string(key), "/.q/r/")
	return rel, ok
}

// readyStarts are where the ranges over ready items in tr (its reads and
// comparisons, nested Txns included) start, as the key after the ready
// directory (namespaces aside).
func readyStarts(tr *pb.TxnRequest) []string {
	var starts []string
	for _, c := range tr.Compare {
		if rel, ok := readyRel(c.Key); ok && len(c.RangeEnd) > 0 {
			starts = append(starts, rel)
		}
	}
	for _, ops := range [][]*pb.RequestOp{tr.Success, tr.Failure} {
		for _, op := range ops {
			if r := op.GetRequestRange(); r != nil && len(r.RangeEnd) > 0 {
				if rel, ok := readyRel(r.Key); ok {
					starts = append(starts, rel)
				}
			}
			if t := op.GetRequestTxn(); t != nil {
				starts = append(starts, readyStarts(t)...)
			}
		}
	}
	return starts
}

// isLook reports whether tr is a look for orphans (it reads the sessions
// that claimed items).
func isLook(tr *pb.TxnRequest) bool {
	for _, op := range tr.Success {
		if r := op.GetRequestRange(); r != nil && strings.HasSuffix(string(r.Key), "/.q/h/") {
			return true
		}
	}
	return false
}

// TestReadsSkipClaimedItems: etcd visits every key deleted since the last
// compaction in each range read or compared, so a consumer that has taken
// 400 items must not start its ranges where the first was. Each range over
// the ready items starts at most 2 * 8 items (the front's raises) behind
// the one claimed next; starting at the ready directory, as before the
// front, visits all 400: this fails. Not counted: the look for orphans
// (at most once a second, known to read whole directories, the part of
// the ready one below the front included).
func TestReadsSkipClaimedItems(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	const depth, warmup, claims = 500, 400, 60
	if err := q.Preload(ctx, depth, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client.Get(ctx, q.ReadyPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil || len(resp.Kvs) != depth {
		t.Fatalf("ready keys: %d, %v", len(resp.Kvs), err)
	}
	var keys []string // every item's key in delivery order
	for _, kv := range resp.Kvs {
		rel, _ := readyRel(kv.Key)
		keys = append(keys, rel)
	}
	var rs recorded[string]
	c := interceptedClient(t, srv, func(req, _ any, err error) error {
		if tr, ok := req.(*pb.TxnRequest); ok && !isLook(tr) {
			rs.add(readyStarts(tr)...)
		}
		return err
	})
	s := newSession(t, c, 10*time.Second)
	cons := newQueue(t, c).Consumer(s)
	for i := range warmup + claims {
		if i == warmup {
			rs.take()
		}
		// Items 0..i-1 are deleted: a range starting at item j visits
		// i-j of them.
		for _, start := range rs.take() {
			if j, _ := slices.BinarySearch(keys, start); i >= warmup && i-j > 2*8 {
				t.Fatalf("claim %d: a range starts at item %d, visiting %d claimed items", i, j, i-j)
			}
		}
		claimAck(t, ctx, cons, fmt.Sprintf("item-%d", i))
	}
}

// drainPast claims and acks n items of q with one consumer, checking they
// come in order from item first on: the front moves past them.
func drainPast(t *testing.T, ctx context.Context, cons *queue.Consumer, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		claimAck(t, ctx, cons, fmt.Sprintf("item-%d", i))
	}
}

// Items that go back to their place, behind which other consumers have
// moved the front on, are claimed next: a nacked item, an item whose
// consumer died, and (within two claims) a delayed item falling due with
// an enqueue order older than the front. Without the front lowered by the write that puts
// each back, the next claims would read past them: each case fails.
func TestItemsPutBehindTheFrontComeNext(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync(), embedtest.FastTicks())
	ctx := testCtx(t)
	// Each consumer has its own client and Queue value, as in its own
	// process; each case has its own queue.
	open := func(t *testing.T, c *clientv3.Client) *queue.Queue {
		q, err := queue.New(c, "front-"+t.Name()[strings.LastIndexByte(t.Name(), '/')+1:])
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	newConsumer := func(t *testing.T) (*queue.Consumer, *concurrency.Session) {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		s := newSession(t, c, 5*time.Second)
		return open(t, c).Consumer(s), s
	}

	t.Run("nack", func(t *testing.T) {
		q := open(t, srv.Client)
		if err := q.Preload(ctx, 100, 100, payloadN("item"), 0); err != nil {
			t.Fatal(err)
		}
		a, _ := newConsumer(t)
		b, _ := newConsumer(t)
		held := claimWant(t, ctx, a, "item-0")
		drainPast(t, ctx, b, 1, 40)
		if err := held.Nack(ctx, 0); err != nil {
			t.Fatal(err)
		}
		claimAck(t, ctx, b, "item-0")
		drainPast(t, ctx, b, 41, 59)
	})

	t.Run("orphan", func(t *testing.T) {
		q := open(t, srv.Client)
		if err := q.Preload(ctx, 100, 100, payloadN("item"), 0); err != nil {
			t.Fatal(err)
		}
		a, sa := newConsumer(t)
		b, _ := newConsumer(t)
		claimWant(t, ctx, a, "item-0")
		drainPast(t, ctx, b, 1, 40)
		if _, err := srv.Client.Revoke(ctx, sa.Lease()); err != nil {
			t.Fatal(err)
		}
		// The next claim sweeps for orphans (at most once a second per
		// Queue value) and puts item 0 back at its place.
		time.Sleep(1100 * time.Millisecond)
		claimAck(t, ctx, b, "item-0")
		drainPast(t, ctx, b, 41, 59)
	})

	t.Run("due", func(t *testing.T) {
		q := open(t, srv.Client)
		enqueue(t, q, "late", queue.WithDelay(time.Second))
		if err := q.Preload(ctx, 100, 100, payloadN("item"), 0); err != nil {
			t.Fatal(err)
		}
		b, _ := newConsumer(t)
		drainPast(t, ctx, b, 0, 40)
		time.Sleep(time.Second)
		// A claim made from the view the last ack read takes its item, and
		// the next read finds "late" due: it comes within two claims.
		claimAck(t, ctx, b, "item-40")
		claimAck(t, ctx, b, "late")
		drainPast(t, ctx, b, 41, 59)
	})
}

// TestConsumersShareTheOrphanLook: the consumers of a queue share one look
// for orphans a second rather than making one each: 6 consumers busy for
// 3 s look at most twice a second between them (each looked once a second
// before: 18). And the look's read below the front (which visits every
// ready item claimed since etcd's last compaction) is made once in 30 s
// between them, not by each.
func TestConsumersShareTheOrphanLook(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	if err := newQueue(t, srv.Client).Preload(ctx, 2000, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	var looks, belows atomic.Int64
	counting := atomic.Bool{}
	const consumers = 6
	start := time.Now()
	var wg sync.WaitGroup
	for range consumers {
		c := interceptedClient(t, srv, func(req, reply any, err error) error {
			tr, ok := req.(*pb.TxnRequest)
			if !ok || err != nil || !isLook(tr) {
				return err
			}
			if len(tr.Compare) > 0 && !reply.(*pb.TxnResponse).Succeeded {
				return nil // another consumer looked since
			}
			for _, op := range tr.Success {
				if r := op.GetRequestRange(); r != nil && strings.HasSuffix(string(r.Key), "/.q/r/") {
					belows.Add(1)
				}
			}
			if counting.Load() {
				looks.Add(1)
			}
			return nil
		})
		cons := newQueue(t, c).Consumer(newSession(t, c, 10*time.Second))
		wg.Go(func() {
			for time.Since(start) < 4500*time.Millisecond {
				cl, err := cons.Claim(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if err := cl.Ack(ctx); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// Each consumer's first look is its own; count from 1.5 s on.
	time.Sleep(1500 * time.Millisecond)
	counting.Store(true)
	wg.Wait()
	counting.Store(false)
	if n := looks.Load(); n > 6 || n == 0 {
		t.Fatalf("%d looks for orphans in 3 s by %d consumers, want 1 to 6", n, consumers)
	}
	// The read below the front, every 30 s between them: one in 4.5 s.
	if n := belows.Load(); n > 1 {
		t.Fatalf("%d looks read below the front in 4.5 s, want at most 1", n)
	}
}

// An item put below the front by a writer that does not lower it (a
// concord version without the front, or a hand-made key) is found by the
// next look for orphans, which lowers the front: it is claimed within a
// few claims after that look. Without the look's check it is never
// claimed while the front stays above it: this fails.
func TestLookFindsItemsBelowTheFront(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, 60, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client.Get(ctx, q.ReadyPrefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("first ready key: %v", err)
	}
	first := resp.Kvs[0]
	cq := newQueue(t, srv.Client)
	cq.SetSlowLookEvery(time.Second) // the look that reads below the front
	cons := cq.Consumer(newSession(t, srv.Client, 10*time.Second))
	drainPast(t, ctx, cons, 0, 30)
	// item-0 again, at its old key, put as an older writer would.
	if _, err := srv.Client.Put(ctx, string(first.Key), string(first.Value)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the next claim's look is due
	for i := 30; i < 60; i++ {
		cl, err := cons.Claim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := string(cl.Payload())
		if err := cl.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		if got == "item-0" {
			if i > 33 {
				t.Fatalf("item-0 came at claim %d, want within 3 claims of the look", i)
			}
			return
		}
	}
	t.Fatal("item-0, put below the front, was never claimed")
}

// rangedKeys are the start keys of the ranges tr reads or compares
// (nested Txns included), or req's if it is a range read.
func rangedKeys(req any) []string {
	var keys []string
	switch r := req.(type) {
	case *pb.RangeRequest:
		if len(r.RangeEnd) > 0 {
			keys = append(keys, string(r.Key))
		}
	case *pb.TxnRequest:
		for _, c := range r.Compare {
			if len(c.RangeEnd) > 0 {
				keys = append(keys, string(c.Key))
			}
		}
		for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
			for _, op := range ops {
				if rr := op.GetRequestRange(); rr != nil {
					keys = append(keys, rangedKeys(rr)...)
				}
				if t := op.GetRequestTxn(); t != nil {
					keys = append(keys, rangedKeys(t)...)
				}
			}
		}
	}
	return keys
}

// A look for orphans reads the sessions that claimed items, not the items:
// etcd visits every key deleted since its last compaction in a range, and
// each acked item deleted two (its claim, and its copy while claimed). With
// 300 acked items and one consumer dead holding two, a look reads neither
// directory whole (it read both before), only the dead session's items,
// returns those two to the queue and forgets the session.
func TestLookReadsSessionsNotItems(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, 310, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	live := newSession(t, srv.Client, 10*time.Second)
	drainPast(t, ctx, newQueue(t, srv.Client).Consumer(live), 0, 300)
	dead := newSession(t, srv.Client, 10*time.Second)
	dq := newQueue(t, srv.Client).Consumer(dead)
	claimWant(t, ctx, dq, "item-300")
	claimWant(t, ctx, dq, "item-301")
	if _, err := srv.Client.Revoke(ctx, dead.Lease()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ranged []string
	c := interceptedClient(t, srv, func(req, _ any, err error) error {
		mu.Lock()
		ranged = append(ranged, rangedKeys(req)...)
		mu.Unlock()
		return err
	})
	// A new Queue value looks at its first claim; its whole look (every
	// 30 s between a queue's consumers) is put off.
	lq := newQueue(t, c)
	lq.SetSlowLookEvery(time.Hour)
	cons := lq.Consumer(newSession(t, c, 10*time.Second))
	claimAck(t, ctx, cons, "item-300")
	claimAck(t, ctx, cons, "item-301")
	mu.Lock()
	defer mu.Unlock()
	deadItems := fmt.Sprintf("/.q/o/%016x/", int64(dead.Lease()))
	for _, k := range ranged {
		if strings.HasSuffix(k, "/.q/o/") || strings.HasSuffix(k, "/.q/c/") ||
			(strings.Contains(k, "/.q/o/") && !strings.HasSuffix(k, deadItems)) {
			t.Errorf("a range over %q: the claimed items or claims of all sessions", k)
		}
	}
	noted := fmt.Sprintf("%s/.q/h/%016x", q.Name(), int64(dead.Lease()))
	if resp, err := srv.Client.Get(ctx, noted); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("the dead session is still noted (%s): %v", noted, err)
	}
	mine := fmt.Sprintf("%s/.q/h/%016x", q.Name(), int64(live.Lease()))
	if resp, err := srv.Client.Get(ctx, mine); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("a live session is not noted (%s): %v", mine, err)
	}
}

// An item whose claim key goes while its consumer's session lives (deleted
// by hand, or left by an undo that could not finish) is returned by the
// whole look, which reads every claimed item and claim every 30 s between
// a queue's consumers (once only a lost session's items came back, and
// this one stayed claimed by nobody).
func TestClaimDeletedWhileSessionLives(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, 1, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	held := claimWant(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "item-0")
	if _, err := srv.Client.Delete(ctx, q.Name()+"/.q/c/"+held.ID()); err != nil {
		t.Fatal(err)
	}
	// Another consumer, whose value last looked whole just now: its look
	// a second on is whole again.
	oq := newQueue(t, srv.Client)
	oq.SetSlowLookEvery(time.Second)
	cons := oq.Consumer(newSession(t, srv.Client, 10*time.Second))
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		cl, err := cons.TryClaim(ctx)
		if errors.Is(err, queue.ErrEmpty) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(cl.Payload()) != "item-0" || cl.Attempts() != 2 {
			t.Fatalf("claimed %s (attempt %d), want item-0 again", cl.Payload(), cl.Attempts())
		}
		return
	}
	t.Fatal("item-0, its claim deleted, not delivered again within 5 s")
}

// A Queue value remembers which sessions' claims it marked (so that only a
// session's first claim writes the marks) only while they live: a process
// that makes a session per job keeps no entry per past session.
func TestEndedSessionForgotten(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, 4, 4, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		s := newSession(t, srv.Client, 10*time.Second)
		claimAck(t, ctx, q.Consumer(s), fmt.Sprintf("item-%d", i))
		if n := q.Noted(); n != 1 {
			t.Fatalf("%d sessions noted after session %d's claim, want 1 (the ended ones forgotten)", n, i)
		}
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// When a consumer's session ends, the first consumer in line returns its
// items by its session (requeueDead), with no request per claim key the
// lease took with it (such a request looks for an item where versions
// before the o/ layout kept it).
func TestLostSessionNoRequestPerClaim(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, 3, 3, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	dead := newSession(t, srv.Client, 10*time.Second)
	dq := newQueue(t, srv.Client).Consumer(dead)
	for i := range 3 {
		claimWant(t, ctx, dq, fmt.Sprintf("item-%d", i))
	}
	var legacy atomic.Int64
	c := interceptedClient(t, srv, func(req, _ any, err error) error {
		if tr, ok := req.(*pb.TxnRequest); ok {
			for _, op := range tr.Success {
				if r := op.GetRequestRange(); r != nil && len(r.RangeEnd) == 0 && strings.Contains(string(r.Key), "/.q/p/") {
					legacy.Add(1)
				}
			}
		}
		return err
	})
	got := claimAsync(ctx, newQueue(t, c), newSession(t, c, 10*time.Second))
	select {
	case r := <-got:
		t.Fatalf("claimed %+v from a queue whose items are all claimed", r)
	case <-time.After(300 * time.Millisecond): // first in line, watching
	}
	if _, err := srv.Client.Revoke(ctx, dead.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || string(r.c.Payload()) != "item-0" {
			t.Fatalf("claimed %+v, %v: want item-0", r.c, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the lost session's items did not come back")
	}
	if n := legacy.Load(); n != 0 {
		t.Fatalf("%d reads of items where older versions kept them, want none", n)
	}
}
