package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// oneReady starts a server with one item enqueued and returns the queue, a
// consumer's session, the item's id, and its ready key as a claim reads it,
// with the revision of that read.
func oneReady(t *testing.T) (*queue.Queue, *concurrency.Session, string, *mvccpb.KeyValue, int64) {
	t.Helper()
	srv := embedtest.Start(t, embedtest.FastTicks())
	q, id, kv, rev := enqueueOne(t, srv)
	return q, newSession(t, srv.Client, 5*time.Second), id, kv, rev
}

// enqueueOne enqueues one item on srv and returns the queue, the item's id,
// and its ready key as a claim reads it, with the revision of that read.
func enqueueOne(t *testing.T, srv *embedtest.Server) (*queue.Queue, string, *mvccpb.KeyValue, int64) {
	t.Helper()
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	id, err := q.Enqueue(ctx, []byte("job"))
	if err != nil {
		t.Fatal(err)
	}
	kv, rev, err := q.Head(ctx)
	if err != nil || kv == nil {
		t.Fatalf("head: %v %v", kv, err)
	}
	return q, id, kv, rev
}

// A claim whose answer was lost may still land after the failing Claim has
// undone it (the server runs one connection's requests concurrently). The
// undo fences it: a claim sent after the undo, as a late one would arrive,
// claims nothing, and the item stays ready for the next consumer.
func TestUndoFencesLateClaim(t *testing.T) {
	ctx := testCtx(t)
	q, s, id, kv, rev := oneReady(t)
	lost := q.LostClaim(s, kv, rev)
	lost.Undo(ctx) // the failing Claim's undo runs first
	landed, err := lost.Land(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if landed {
		t.Fatal("a claim sent after its undo landed")
	}
	st, err := q.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ready) != 1 || st.Ready[0].ID != id || len(st.Claimed) != 0 || len(st.Orphaned) != 0 {
		t.Fatalf("after a fenced claim: ready %v, claimed %v, orphaned %v", st.Ready, st.Claimed, st.Orphaned)
	}
	c, err := q.Consumer(s).TryClaim(ctx)
	if err != nil || c.ID() != id {
		t.Fatalf("next claim: %v, %v", c, err)
	}
	if c.Attempts() != 1 {
		t.Fatalf("attempts %d after one delivery", c.Attempts())
	}
}

// A claim that landed before its undo is removed, and the item goes back to
// the queue at its place.
func TestUndoReturnsLandedClaim(t *testing.T) {
	ctx := testCtx(t)
	q, s, id, kv, rev := oneReady(t)
	lost := q.LostClaim(s, kv, rev)
	if landed, err := lost.Land(ctx); err != nil || !landed {
		t.Fatalf("claim: %v, %v", landed, err)
	}
	lost.Undo(ctx) // its answer was lost: the consumer never got it
	st, err := q.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ready) != 1 || st.Ready[0].ID != id || len(st.Claimed) != 0 {
		t.Fatalf("after undoing a landed claim: ready %v, claimed %v", st.Ready, st.Claimed)
	}
	c, err := q.Consumer(s).TryClaim(ctx)
	if err != nil || c.ID() != id {
		t.Fatalf("next claim: %v, %v", c, err)
	}
}

// An undo that cannot reach etcd for its whole time goes on in the
// background for the session: a claim that lands once etcd is back is
// still undone, and the item does not stay claimed by a consumer that
// never got it until its session ends.
func TestUndoGoesOnAfterAnOutage(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	q, id, kv, rev := enqueueOne(t, srv)
	p, pc := embedtest.NewProxyClient(t, srv.Endpoints[0])
	s := newSession(t, pc, 10*time.Second)
	qc := newQueue(t, pc)
	lost := qc.LostClaim(s, kv, rev)
	p.Blackhole()
	lost.Undo(ctx) // etcd unreachable for the whole undo
	p.Unblackhole()
	for i := 0; ; i++ { // the consumer's client connects again
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := pc.Get(gctx, "x")
		cancel()
		if err == nil {
			break
		}
		if i == 10 {
			t.Fatalf("client not back after the blackhole: %v", err)
		}
	}
	// The claim lands now, as a late one would (or is fenced first).
	if _, err := lost.Land(ctx); err != nil {
		t.Fatalf("late claim: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := q.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Ready) == 1 && st.Ready[0].ID == id && len(st.Claimed) == 0 && len(st.Orphaned) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("item not back in the queue: ready %v, claimed %v, orphaned %v", st.Ready, st.Claimed, st.Orphaned)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := q.Consumer(newSession(t, srv.Client, 5*time.Second)).TryClaim(ctx)
	if err != nil || c.ID() != id {
		t.Fatalf("next claim: %v, %v", c, err)
	}
}
