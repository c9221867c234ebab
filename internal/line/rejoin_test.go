package line_test

import (
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/session"
)

// A rejoined ticket keeps its line: Head and Wait read the line it rejoined,
// never the rest of the keyspace (a key written before the line existed
// would otherwise come first).
func TestRejoinKeepsItsLine(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	if _, err := srv.Client.Put(ctx, "a-unrelated-key", "x"); err != nil {
		t.Fatal(err)
	}
	a := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	head, err := line.Join(ctx, a, a.LineKey("e/"), "a", "e/", 1)
	if err != nil {
		t.Fatal(err)
	}
	b := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	if _, err := line.Join(ctx, b, b.LineKey("e/"), "b", "e/", 1); err != nil {
		t.Fatal(err)
	}
	// A resumed process finds b's key again.
	pub, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithLease(b.Lease()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Orphan()
	resumed := (*session.Session)(pub)
	tk, err := line.Rejoin(ctx, resumed, "e/")
	if err != nil {
		t.Fatal(err)
	}
	if tk.Value() != "b" || tk.Admitted(1) {
		t.Fatalf("rejoined %q admitted=%v, want b's ticket waiting", tk.Value(), tk.Admitted(1))
	}
	h, err := tk.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil || string(h.Key) != head.Key() {
		t.Fatalf("Head of the rejoined ticket = %v, want the line's head %s", h, head.Key())
	}
	done := make(chan error, 1)
	go func() { done <- tk.Wait(ctx, 1) }()
	if err := head.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("rejoined ticket not admitted after the head left")
	}
	if _, err := line.Rejoin(ctx, a, "other/"); !errors.Is(err, errs.NoTicket) {
		t.Fatalf("Rejoin of a line the lease holds nothing in = %v, want NoTicket", err)
	}
}

// Abandon removes the ticket's key at once, lets the next in line in, and
// does nothing for a ticket its caller's own transaction deleted.
func TestAbandon(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	first, err := line.Join(ctx, s, s.LineKey("ab/"), "", "ab/", 1)
	if err != nil {
		t.Fatal(err)
	}
	second, err := line.Join(ctx, s, s.LineKey("ab/"), "", "ab/", 1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- second.Wait(ctx, 1) }()
	first.Abandon()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the next ticket was not admitted after Abandon")
	}
	// A key deleted by the caller's own transaction: Abandon leaves a newer
	// key of the same name alone.
	if _, err := srv.Client.Txn(ctx).Then(second.DeleteOp()).Commit(); err != nil {
		t.Fatal(err)
	}
	second.Deleted()
	if _, err := srv.Client.Put(ctx, second.Key(), "newer"); err != nil {
		t.Fatal(err)
	}
	second.Abandon()
	resp, err := srv.Client.Get(ctx, second.Key())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatal("Abandon after Deleted removed a newer key")
	}
	// Abandon of a ticket whose etcd cannot be reached: the session keeps
	// trying and the key goes once etcd answers again.
	px := embedtest.NewProxy(t, srv.Endpoints[0])
	c, err := px.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	cs := newSession(t, c, concurrency.WithTTL(10*time.Second))
	tk, err := line.Join(ctx, cs, cs.LineKey("ab/"), "", "ab/", 1)
	if err != nil {
		t.Fatal(err)
	}
	px.Blackhole()
	tk.Abandon() // gives up after its own timeout; the cleaner goes on
	px.Unblackhole()
	waitNoKeys(t, srv.Client, tk.Key())
}
