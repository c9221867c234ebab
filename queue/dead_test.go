package queue_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// kill delivers the queue's next item once and has it dead-lettered: with
// one delivery allowed, the claim after a Nack moves it to the dead letters.
func kill(t *testing.T, q *queue.Queue, claim func() (*queue.Claim, error)) string {
	t.Helper()
	ctx := testCtx(t)
	c, err := claim()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := claim(); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("claim of an item out of deliveries = %v, want ErrEmpty (dead-lettered)", err)
	}
	st, err := q.Inspect(ctx)
	if err != nil || len(st.Dead) != 1 {
		t.Fatalf("Inspect = %+v %v, want one dead letter", st, err)
	}
	return st.Dead[0].ID
}

func TestRequeueAndDeleteDeadLetters(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	q := newQueue(t, srv.Client, queue.WithMaxDeliveries(1))
	s := newSession(t, srv.Client, 5*time.Second)
	tryClaim := func() (*queue.Claim, error) { return q.Consumer(s).TryClaim(ctx) }

	for _, id := range []string{"", "a/b"} {
		if err := q.Requeue(ctx, id); !errors.Is(err, queue.ErrNoDeadLetter) {
			t.Fatalf("Requeue(%q) = %v, want ErrNoDeadLetter", id, err)
		}
	}
	first := enqueue(t, q, "poison", queue.WithPriority(3))
	if id := kill(t, q, tryClaim); id != first {
		t.Fatalf("dead letter %s, want %s", id, first)
	}
	if err := q.Requeue(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := q.Requeue(ctx, first); !errors.Is(err, queue.ErrNoDeadLetter) {
		t.Fatalf("second Requeue = %v, want ErrNoDeadLetter", err)
	}
	st, err := q.Inspect(ctx)
	if err != nil || len(st.Dead) != 0 || len(st.Ready) != 1 {
		t.Fatalf("after Requeue: %+v %v, want one ready item, no dead letter", st, err)
	}
	if it := st.Ready[0]; it.ID != first || it.Attempts != 0 || it.Priority != 3 || string(it.Payload) != "poison" {
		t.Fatalf("requeued item = %+v, want %s with priority 3, payload kept, deliveries afresh", it, first)
	}
	// Requeued, it is delivered again (and, still failing, dies again).
	c, err := q.Consumer(s).TryClaim(ctx)
	if err != nil || c.ID() != first {
		t.Fatalf("claim after Requeue = %v, %v", c, err)
	}
	if err := c.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Consumer(s).TryClaim(ctx); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("claim = %v, want ErrEmpty", err)
	}
	if err := q.DeleteDead(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := q.DeleteDead(ctx, first); !errors.Is(err, queue.ErrNoDeadLetter) {
		t.Fatalf("second DeleteDead = %v, want ErrNoDeadLetter", err)
	}
	if st, err := q.Inspect(ctx); err != nil || len(st.Dead)+len(st.Ready)+len(st.Claimed) != 0 {
		t.Fatalf("after DeleteDead: %+v %v, want an empty queue", st, err)
	}
}

// TestDeadLetterKeepsOrder: a claim that dead-letters the item at the head
// then takes the next item in order; moving an item to the dead letters is
// not a race lost to another consumer (which would spread this Queue
// value's claims over the first few items).
func TestDeadLetterKeepsOrder(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	q := newQueue(t, srv.Client, queue.WithMaxDeliveries(1))
	s := newSession(t, srv.Client, 5*time.Second)
	cons := q.Consumer(s)
	for round := range 5 {
		poison := enqueue(t, q, "poison", queue.WithPriority(9))
		c, err := cons.TryClaim(ctx)
		if err != nil || c.ID() != poison {
			t.Fatalf("round %d: claim = %v, %v; want the poison item", round, c, err)
		}
		if err := c.Nack(ctx, 0); err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := range 8 {
			want = append(want, enqueue(t, q, "item", queue.WithPriority(8-i)))
		}
		// The poison item is first, out of deliveries: this claim dead-letters
		// it and must then take the highest priority left, and so on.
		for i, id := range want {
			c, err := cons.TryClaim(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if c.ID() != id {
				t.Fatalf("round %d: claim %d took %s (priority order: %v), want %s", round, i, c.ID(), want, id)
			}
			if err := c.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A value under a dead session's claimed items that is not an item
// (written by hand, or by another version) goes to the dead letters, and
// the session is forgotten: before, it stayed, and every look read it
// again.
func TestUndecodableOrphanToDeadLetters(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	dead := newSession(t, srv.Client, 10*time.Second)
	lease := fmt.Sprintf("%016x", int64(dead.Lease()))
	pfx := q.Name() + "/.q/"
	if _, err := srv.Client.Txn(ctx).Then(
		clientv3.OpPut(pfx+"o/"+lease+"/junk", "not an item"),
		clientv3.OpPut(pfx+"h/"+lease, ""),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := dead.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Look(ctx); err != nil {
		t.Fatal(err)
	}
	value := func(key string) (string, bool) {
		t.Helper()
		resp, err := srv.Client.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return "", false
		}
		return string(resp.Kvs[0].Value), true
	}
	if v, ok := value(pfx + "x/junk"); !ok || v != "not an item" {
		t.Fatalf("dead letter junk: %q (%v), want the value", v, ok)
	}
	for _, key := range []string{pfx + "o/" + lease + "/junk", pfx + "h/" + lease} {
		if _, ok := value(key); ok {
			t.Fatalf("%s is left", key)
		}
	}
	// Inspect lists it, and it can be requeued (its value the payload).
	st, err := q.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Dead) != 1 || st.Dead[0].ID != "junk" || string(st.Dead[0].Payload) != "not an item" {
		t.Fatalf("dead letters %+v, want junk with its value", st.Dead)
	}
	if err := q.Requeue(ctx, "junk"); err != nil {
		t.Fatal(err)
	}
	claimAck(t, ctx, q.Consumer(newSession(t, srv.Client, 10*time.Second)), "not an item")
}
