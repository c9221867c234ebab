package queue_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/queue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSession(t testing.TB, c *clientv3.Client, ttl time.Duration) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(testCtx(t), c, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func newQueue(t testing.TB, c *clientv3.Client, opts ...queue.Option) *queue.Queue {
	t.Helper()
	q, err := queue.New(c, "jobs", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func enqueue(t testing.TB, q *queue.Queue, payload string, opts ...queue.EnqueueOption) string {
	t.Helper()
	id, err := q.Enqueue(testCtx(t), []byte(payload), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type claimResult struct {
	c   *queue.Claim
	err error
}

func claimAsync(ctx context.Context, q *queue.Queue, s *concurrency.Session) <-chan claimResult {
	ch := make(chan claimResult, 1)
	go func() {
		c, err := q.Consumer(s).Claim(ctx)
		ch <- claimResult{c, err}
	}()
	return ch
}

func TestOrderPriorityDelay(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	s := newSession(t, srv.Client, 5*time.Second)
	enqueue(t, q, "a")
	enqueue(t, q, "late", queue.WithDelay(400*time.Millisecond))
	enqueue(t, q, "b")
	enqueue(t, q, "urgent", queue.WithPriority(9))
	enqueue(t, q, "c")
	var got []string
	for range 4 {
		c, err := q.Consumer(s).TryClaim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(c.Payload()))
		if err := c.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if want := "[urgent a b c]"; fmt.Sprint(got) != want {
		t.Fatalf("order %v, want %s", got, want)
	}
	if _, err := q.Consumer(s).TryClaim(ctx); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("TryClaim before the delay = %v, want ErrEmpty", err)
	}
	start := time.Now()
	c, err := q.Consumer(s).Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Payload()) != "late" || time.Since(start) > 2*time.Second {
		t.Fatalf("delayed item %q after %v", c.Payload(), time.Since(start))
	}
	if err := c.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := q.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len = %d %v", n, err)
	}
}

// An Ack reads the head of the queue along with its write, so the next
// Claim needs no read; an item enqueued ahead after that read (a higher
// priority) must still come first.
func TestClaimAfterAckSeesNewerItemAhead(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	s := newSession(t, srv.Client, 5*time.Second)
	for round := range 3 {
		enqueue(t, q, "first")
		enqueue(t, q, "next")
		c, err := q.Consumer(s).TryClaim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ack(ctx); err != nil { // reads the head: "next"
			t.Fatal(err)
		}
		enqueue(t, q, "urgent", queue.WithPriority(5))
		var got []string
		for range 2 {
			c, err := q.Consumer(s).Claim(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(c.Payload()))
			if err := c.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if want := "[urgent next]"; fmt.Sprint(got) != want {
			t.Fatalf("round %d: claimed %v after the ack, want %s", round, got, want)
		}
	}
}

func TestValidation(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if _, err := q.Enqueue(ctx, make([]byte, names.MaxValueBytes)); !errors.Is(err, queue.ErrTooLarge) {
		t.Errorf("huge payload: %v", err)
	}
	if _, err := q.Enqueue(ctx, nil, queue.WithPriority(256)); !errors.Is(err, queue.ErrInvalidPriority) {
		t.Errorf("priority 256: %v", err)
	}
	if _, err := queue.New(srv.Client, "a/.q"); !errors.Is(err, queue.ErrInvalidName) {
		t.Errorf("bad name: %v", err)
	}
	st, err := q.Inspect(ctx)
	if err != nil || len(st.Ready)+len(st.Delayed) != 0 {
		t.Fatalf("rejected enqueues wrote something: %+v %v", st, err)
	}
}

// A blocked consumer wakes as soon as an item is enqueued.
func TestBlockedConsumerWakesAtOnce(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	s := newSession(t, srv.Client, 5*time.Second)
	var took []time.Duration
	for range 5 {
		got := claimAsync(ctx, q, s)
		select {
		case r := <-got:
			t.Fatalf("claimed from an empty queue: %+v", r)
		case <-time.After(100 * time.Millisecond):
		}
		start := time.Now()
		enqueue(t, q, "x")
		r := <-got
		if r.err != nil {
			t.Fatal(r.err)
		}
		took = append(took, time.Since(start))
		// The claim left the line in its own write: no key waits there.
		resp, err := srv.Client.Get(ctx, "jobs/.q/w/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 0 {
			t.Fatalf("%d keys in the line after a blocked claim", resp.Count)
		}
		if err := r.c.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A wake-up through a watch opened at an old revision waits for the
	// server's 100 ms loop every time; a busy machine may delay one now
	// and then, so judge the median.
	slices.Sort(took)
	if took[len(took)/2] > 50*time.Millisecond {
		t.Errorf("enqueue -> claim took %v (median %v)", took, took[len(took)/2])
	}
}

// An item whose consumer's session is lost is delivered again; the old
// consumer's Ack then fails and changes nothing.
func TestRedeliveryAfterLostConsumer(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	sa := newSession(t, srv.Client, 5*time.Second)
	sb := newSession(t, srv.Client, 5*time.Second)
	id := enqueue(t, q, "work")
	ca, err := q.Consumer(sa).Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := claimAsync(ctx, q, sb)
	select {
	case r := <-got:
		t.Fatalf("a claimed item was delivered twice: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := srv.Client.Revoke(ctx, sa.Lease()); err != nil {
		t.Fatal(err)
	}
	var r claimResult
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("item not redelivered after its consumer's lease was revoked")
	}
	if r.err != nil || r.c.ID() != id || r.c.Attempts() != 2 || r.c.Token() <= ca.Token() {
		t.Fatalf("redelivery %+v %v", r.c, r.err)
	}
	if err := ca.Ack(ctx); !errors.Is(err, queue.ErrClaimLost) {
		t.Fatalf("stale Ack = %v, want ErrClaimLost", err)
	}
	if err := ca.Nack(ctx, 0); !errors.Is(err, queue.ErrClaimLost) {
		t.Fatalf("stale Nack = %v, want ErrClaimLost", err)
	}
	st, _ := q.Inspect(ctx)
	if len(st.Claimed) != 1 || st.Claimed[0].Lease != sb.Lease() {
		t.Fatalf("after stale settle: %+v", st)
	}
	if err := r.c.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.c.Ack(ctx); err != nil {
		t.Fatalf("second Ack: %v", err)
	}
}

func TestDeadLetterAfterMaxDeliveries(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client, queue.WithMaxDeliveries(3))
	s := newSession(t, srv.Client, 5*time.Second)
	enqueue(t, q, "poison")
	for i := 1; i <= 3; i++ {
		c, err := q.Consumer(s).TryClaim(ctx)
		if err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		if c.Attempts() != i {
			t.Fatalf("attempts %d, want %d", c.Attempts(), i)
		}
		if err := c.Nack(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Consumer(s).TryClaim(ctx); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("fourth delivery: %v", err)
	}
	st, err := q.Inspect(ctx)
	if err != nil || len(st.Dead) != 1 || string(st.Dead[0].Payload) != "poison" {
		t.Fatalf("dead letters %+v %v", st.Dead, err)
	}
}

func TestNackDelay(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	s := newSession(t, srv.Client, 5*time.Second)
	enqueue(t, q, "retry-me")
	c, err := q.Consumer(s).TryClaim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nack(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Consumer(s).TryClaim(ctx); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("claimable during its nack delay: %v", err)
	}
	c, err = q.Consumer(s).Claim(ctx)
	if err != nil || string(c.Payload()) != "retry-me" {
		t.Fatalf("after delay: %v", err)
	}
	_ = c.Ack(ctx)
}

// A dead consumer's item comes back at its place on the next claim, even
// while a backlog keeps every consumer busy (no consumer waits in line to
// notice the expired claim).
func TestOrphanReturnsUnderBacklog(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	var ids []string
	for i := range 5 {
		id, err := q.Enqueue(ctx, []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	sa := newSession(t, srv.Client, 5*time.Second)
	ca, err := q.Consumer(sa).TryClaim(ctx)
	if err != nil || ca.ID() != ids[0] {
		t.Fatalf("first claim: %v %v", ca, err)
	}
	if _, err := srv.Client.Revoke(ctx, sa.Lease()); err != nil {
		t.Fatal(err)
	}
	st, err := q.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Orphaned) != 1 || st.Orphaned[0].ID != ids[0] || len(st.Claimed) != 0 {
		t.Fatalf("after the consumer died: %d orphaned, %d claimed", len(st.Orphaned), len(st.Claimed))
	}
	if n, _ := q.Len(ctx); n != 5 {
		t.Fatalf("Len = %d, want 5", n)
	}
	// Another consumer process (its own Queue value) claims next.
	sb := newSession(t, srv.Client, 5*time.Second)
	cb, err := newQueue(t, srv.Client).Consumer(sb).TryClaim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cb.ID() != ids[0] || cb.Attempts() != 2 {
		t.Fatalf("next claim got %s (attempt %d), want the orphan %s back at the head", cb.ID(), cb.Attempts(), ids[0])
	}
}

// Inspect lists a delayed item whose time has come among the ready ones,
// in the place a claim would take it, though no claim has moved it yet;
// one not due yet stays delayed.
func TestInspectShowsDueItemsAsReady(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	first := enqueue(t, q, "first")
	due := enqueue(t, q, "due", queue.WithDelay(50*time.Millisecond))
	later := enqueue(t, q, "later", queue.WithDelay(time.Hour))
	last := enqueue(t, q, "last")
	for deadline := time.Now().Add(5 * time.Second); ; {
		st, err := q.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ready []string
		for _, it := range st.Ready {
			ready = append(ready, it.ID)
		}
		if len(st.Ready) == 3 {
			if want := []string{first, due, last}; !slices.Equal(ready, want) {
				t.Errorf("ready %v, want %v (first, due, last)", ready, want)
			}
			if st.Ready[1].Due.IsZero() || st.Ready[1].Due.After(time.Now()) {
				t.Errorf("due item's Due %v, want a time in the past", st.Ready[1].Due)
			}
			if len(st.Delayed) != 1 || st.Delayed[0].ID != later {
				t.Errorf("delayed %+v, want only %s", st.Delayed, later)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("due item still not ready: ready %v, delayed %d", ready, len(st.Delayed))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A claim takes the items in that order.
	s := newSession(t, srv.Client, 5*time.Second)
	for _, want := range []string{first, due, last} {
		c, err := q.Consumer(s).Claim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c.ID() != want {
			t.Errorf("claimed %s, want %s", c.ID(), want)
		}
		if err := c.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
