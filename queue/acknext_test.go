package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// AckNext acks an item and claims the next in one request while nobody
// else takes it: 20 items in 20 requests after the first claim's, in
// order, and the queue empty after. Acking and claiming apart takes 2 per
// item: this fails without the nested claim.
func TestAckNextIsOneRequest(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, 20, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	var txns atomic.Int64
	c := interceptedClient(t, srv, func(req, _ any, err error) error {
		if _, ok := req.(*pb.TxnRequest); ok {
			txns.Add(1)
		}
		return err
	})
	cons := newQueue(t, c).Consumer(newSession(t, c, 10*time.Second))
	cl := claimWant(t, ctx, cons, "item-0")
	txns.Store(0)
	for i := 1; i < 20; i++ {
		next, err := cl.AckNext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(next.Payload()), fmt.Sprintf("item-%d", i); got != want {
			t.Fatalf("AckNext: %s, want %s", got, want)
		}
		cl = next
	}
	if n := txns.Load(); n != 19 {
		t.Fatalf("19 AckNexts sent %d transactions, want 19", n)
	}
	if _, err := cl.AckNext(ctx); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("last AckNext: %v, want ErrEmpty", err)
	}
	if n, err := q.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len after: %d, %v", n, err)
	}
}

// When another consumer took the item next in line, AckNext claims the one
// after in the same request (its chain of candidates), and that one only;
// when it took every candidate, AckNext still acks and claims the next
// (its fallback read); when the claim was lost, it fails as Ack does and
// claims nothing; when its answer is lost, the item it may have claimed is
// returned.
func TestAckNextFallsBack(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync(), embedtest.FastTicks())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	var txns atomic.Int64
	counted := interceptedClient(t, srv, func(req, _ any, err error) error {
		if _, ok := req.(*pb.TxnRequest); ok {
			txns.Add(1)
		}
		return err
	})
	ackAll := func(t *testing.T, cs ...*queue.Claim) {
		t.Helper()
		for _, c := range cs {
			if err := c.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := q.Len(ctx); n != 0 {
			t.Fatalf("Len after: %d", n)
		}
	}

	t.Run("taken", func(t *testing.T) {
		if err := q.Preload(ctx, 4, 100, payloadN("item"), 0); err != nil {
			t.Fatal(err)
		}
		held := claimWant(t, ctx, newQueue(t, counted).Consumer(newSession(t, counted, 10*time.Second)), "item-0")
		other := claimWant(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "item-1")
		txns.Store(0)
		next, err := held.AckNext(ctx)
		if err != nil || string(next.Payload()) != "item-2" {
			t.Fatalf("AckNext: %v, %v; want item-2", next, err)
		}
		if n := txns.Load(); n != 1 {
			t.Fatalf("AckNext with the first candidate taken sent %d transactions, want 1", n)
		}
		st, err := q.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Ready) != 1 || string(st.Ready[0].Payload) != "item-3" || len(st.Claimed) != 2 {
			t.Fatalf("after: ready %v, claimed %v; want item-3 ready, 2 claimed", st.Ready, st.Claimed)
		}
		ackAll(t, other, next, claimWant(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "item-3"))
	})

	// held has item-0, another consumer every candidate held kept.
	allTaken := func(t *testing.T, c *clientv3.Client) (held *queue.Claim, others []*queue.Claim) {
		t.Helper()
		if err := q.Preload(ctx, queue.NextCandidates+2, 100, payloadN("item"), 0); err != nil {
			t.Fatal(err)
		}
		held = claimWant(t, ctx, newQueue(t, c).Consumer(newSession(t, c, 10*time.Second)), "item-0")
		b := newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second))
		for i := 1; i <= queue.NextCandidates; i++ {
			others = append(others, claimWant(t, ctx, b, fmt.Sprintf("item-%d", i)))
		}
		return held, others
	}

	t.Run("all taken", func(t *testing.T) {
		held, others := allTaken(t, counted)
		txns.Store(0)
		next, err := held.AckNext(ctx)
		if want := fmt.Sprintf("item-%d", queue.NextCandidates+1); err != nil || string(next.Payload()) != want {
			t.Fatalf("AckNext: %v, %v; want %s", next, err, want)
		}
		if n := txns.Load(); n != 2 {
			t.Fatalf("AckNext with every candidate taken sent %d transactions, want 2 (the ack, a claim)", n)
		}
		ackAll(t, append(others, next)...)
	})

	t.Run("next claim fails", func(t *testing.T) {
		// The first claim transaction (a top-level put of a claim key) once
		// armed has its answer lost: the claim after the ack, not the ack.
		var armed atomic.Bool
		c := interceptedClient(t, srv, func(req, _ any, err error) error {
			if tr, ok := req.(*pb.TxnRequest); ok && err == nil && armed.Load() {
				for _, op := range tr.Success {
					if p := op.GetRequestPut(); p != nil && strings.Contains(string(p.Key), "/.q/c/") && armed.CompareAndSwap(true, false) {
						return errors.New("answer lost")
					}
				}
			}
			return err
		})
		held, others := allTaken(t, c)
		armed.Store(true)
		if next, err := held.AckNext(ctx); err == nil || errors.Is(err, queue.ErrEmpty) || next != nil {
			t.Fatalf("AckNext with the next claim's answer lost: %v, %v; want an error", next, err)
		}
		if err := held.Ack(ctx); err != nil {
			t.Fatalf("Ack after AckNext made the ack: %v, want nil", err)
		}
		// The last item's claim was undone: it is ready again.
		last := claimWant(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), fmt.Sprintf("item-%d", queue.NextCandidates+1))
		ackAll(t, append(others, last)...)
	})

	t.Run("lost", func(t *testing.T) {
		if err := q.Preload(ctx, 2, 100, payloadN("item"), 0); err != nil {
			t.Fatal(err)
		}
		s := newSession(t, srv.Client, 10*time.Second)
		held := claimWant(t, ctx, newQueue(t, srv.Client).Consumer(s), "item-0")
		if _, err := srv.Client.Revoke(ctx, s.Lease()); err != nil {
			t.Fatal(err)
		}
		if next, err := held.AckNext(ctx); !errors.Is(err, queue.ErrClaimLost) || next != nil {
			t.Fatalf("AckNext after the session's loss: %v, %v; want ErrClaimLost", next, err)
		}
		st, err := q.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Ready) != 1 || string(st.Ready[0].Payload) != "item-1" || len(st.Claimed) != 0 {
			t.Fatalf("after: ready %v, claimed %v; want item-1 ready, nothing claimed", st.Ready, st.Claimed)
		}
		claimAck(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "item-0")
		claimAck(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "item-1")
	})

	t.Run("answer lost", func(t *testing.T) {
		if err := q.Preload(ctx, 3, 100, payloadN("item"), 0); err != nil {
			t.Fatal(err)
		}
		var lose atomic.Bool
		c := losingClient(t, srv, &lose)
		cons := newQueue(t, c).Consumer(newSession(t, c, 10*time.Second))
		held := claimWant(t, ctx, cons, "item-0")
		// The first candidate taken: the chain's second claim lands.
		other := claimWant(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "item-1")
		lose.Store(true)
		if next, err := held.AckNext(ctx); err == nil || next != nil {
			t.Fatalf("AckNext with its answer lost: %v, %v; want an error", next, err)
		}
		st, err := q.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The ack landed; the nested claim of item-2 was undone.
		if len(st.Ready) != 1 || string(st.Ready[0].Payload) != "item-2" || len(st.Claimed) != 1 {
			t.Fatalf("after: ready %v, claimed %v; want item-2 ready, item-1 claimed", st.Ready, st.Claimed)
		}
		if _, err := claimWant(t, ctx, cons, "item-2").AckNext(ctx); !errors.Is(err, queue.ErrEmpty) {
			t.Fatalf("last AckNext: %v, want ErrEmpty", err)
		}
		ackAll(t, other)
	})
}

// Two workers share one session; the second claims the item the first's
// AckNext would claim next, and that AckNext loses its answer. Its undo
// removes only a claim it made: the second worker's claim stays (the
// undo once took any claim of the item under the session's lease).
func TestAckNextUndoLeavesOthersClaims(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	if err := newQueue(t, srv.Client).Preload(ctx, 3, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	var lose atomic.Bool
	c := losingClient(t, srv, &lose)
	s := newSession(t, c, 10*time.Second)
	first := claimWant(t, ctx, newQueue(t, c).Consumer(s), "item-0")
	second := claimWant(t, ctx, newQueue(t, c).Consumer(s), "item-1")
	lose.Store(true)
	if _, err := first.AckNext(ctx); err == nil {
		t.Fatal("AckNext with its answer lost returned no error")
	}
	if err := second.Ack(ctx); err != nil {
		t.Fatalf("the second worker's Ack of item-1: %v", err)
	}
}

// A worker that takes every item with AckNext still returns the items of
// dead consumers (within about a second of their loss), though its claims
// never go through Claim's path: once they waited for the backlog to drain.
func TestAckNextReturnsOrphans(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	if err := newQueue(t, srv.Client).Preload(ctx, 400, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	cl := claimWant(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "item-0")
	dead := newSession(t, srv.Client, 10*time.Second)
	claimWant(t, ctx, newQueue(t, srv.Client).Consumer(dead), "item-1")
	if _, err := srv.Client.Revoke(ctx, dead.Lease()); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // the item's work
		next, err := cl.AckNext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(next.Payload()) == "item-1" {
			return
		}
		cl = next
	}
	t.Fatal("item-1, its consumer dead, not delivered again in 4 s of AckNext")
}

// The candidate a new claim keeps comes from the read made with it, never
// from an older view that still lists the item just claimed: once, the
// next AckNext then deleted and put the same keys in one transaction,
// which etcd refuses, and every retry failed the same way.
func TestAckNextNeverTakesItsOwnItem(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, 4, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	cons := q.Consumer(newSession(t, srv.Client, 10*time.Second))
	held := claimWant(t, ctx, cons, "item-0")
	// Two items ahead, claimed and acked by the same Queue value: its
	// second ack keeps a view of item-1 to item-3.
	enqueue(t, q, "H", queue.WithPriority(1))
	enqueue(t, q, "Ha", queue.WithPriority(1))
	h, ha := claimWant(t, ctx, cons, "H"), claimWant(t, ctx, cons, "Ha")
	for _, c := range []*queue.Claim{h, ha} {
		if err := c.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An item further ahead lowers the front; another consumer takes it.
	enqueue(t, q, "H2", queue.WithPriority(2))
	claimWant(t, ctx, newQueue(t, srv.Client).Consumer(newSession(t, srv.Client, 10*time.Second)), "H2")
	// The nested claim of item-1 lands; the read with it is incomplete
	// (the front was lowered), so item-1 has no candidate from it.
	next, err := held.AckNext(ctx)
	if err != nil || string(next.Payload()) != "item-1" {
		t.Fatalf("AckNext: %v, %v; want item-1", next, err)
	}
	after, err := next.AckNext(ctx)
	if err != nil || string(after.Payload()) != "item-2" {
		t.Fatalf("AckNext of item-1: %v, %v; want item-2", after, err)
	}
}

// When an AckNext's answer is lost, the claims of its candidates are
// undone at once: with etcd not answering, AckNext returns after one
// undo's timeout, not one per candidate (they ran in turn, 6 s), and the
// undos finish in the background once etcd answers.
func TestAckNextUndoesCandidatesAtOnce(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	if err := q.Preload(ctx, queue.NextCandidates+1, 100, payloadN("item"), 0); err != nil {
		t.Fatal(err)
	}
	// lose: the next transaction that writes a claim key (the AckNext)
	// lands and its answer is lost. hang: a
	// transaction that undoes a claim (it rewrites a ready key if
	// unchanged) waits, unsent, until its context ends.
	var lose, hang atomic.Bool
	var hung atomic.Int64
	c, err := srv.NewClientWith(grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		tr, ok := req.(*pb.TxnRequest)
		if ok && hang.Load() && len(tr.Success) == 1 && tr.Success[0].GetRequestPut() != nil &&
			strings.Contains(string(tr.Success[0].GetRequestPut().Key), "/.q/r/") {
			hung.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if ok && err == nil && writesClaim(tr) && lose.CompareAndSwap(true, false) {
			return errors.New("answer lost")
		}
		return err
	}))
	if err != nil {
		t.Fatal(err)
	}
	held := claimWant(t, ctx, newQueue(t, c).Consumer(newSession(t, c, 10*time.Second)), "item-0")
	lose.Store(true)
	hang.Store(true)
	start := time.Now()
	if next, err := held.AckNext(ctx); err == nil || next != nil {
		t.Fatalf("AckNext with its answer lost: %v, %v; want an error", next, err)
	}
	took := time.Since(start)
	if n := hung.Load(); n < queue.NextCandidates {
		t.Fatalf("%d undos waited, want at least %d: the test no longer holds them", n, queue.NextCandidates)
	}
	if took > 4*time.Second {
		t.Fatalf("AckNext took %v with %d undos waiting, want about one undo's timeout (2s)", took, queue.NextCandidates)
	}
	hang.Store(false)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := q.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Ready) == queue.NextCandidates && len(st.Claimed) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready %d, claimed %d after the undos could finish; want %d ready, none claimed", len(st.Ready), len(st.Claimed), queue.NextCandidates)
		}
	}
}
