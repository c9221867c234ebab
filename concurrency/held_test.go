package concurrency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
)

// Every held type, once lost, answers an operation that needs it with an
// error matching concurrency.ErrNotHeld, besides its recipe's own sentinel:
// a guarded write (lock, permit), Proclaim, Ack and Nack, a checkpoint save.
func TestLostHoldsAnswerErrNotHeld(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	put := clientv3.OpPut("held/data", "x")
	lose := func(t *testing.T, h concurrency.Held) {
		t.Helper()
		// Someone deletes the holder's key: the hold is lost.
		key := guardKey(t, h)
		if _, err := srv.Client.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, h.Done(), 5*time.Second, "Done after the key was deleted")
		if !errors.Is(h.Err(), concurrency.ErrKeyDeleted) {
			t.Fatalf("Err = %v, want ErrKeyDeleted", h.Err())
		}
	}
	t.Run("lock", func(t *testing.T) {
		s := newSession(t, srv.Client)
		m, err := lock.NewMutex(s, "held/lock")
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		g := m.Guard()
		lose(t, m)
		if _, err := g.Do(ctx, put); !errors.Is(err, concurrency.ErrNotHeld) {
			t.Fatalf("guarded write after loss = %v, want ErrNotHeld", err)
		}
	})
	t.Run("leadership", func(t *testing.T) {
		s := newSession(t, srv.Client)
		e, err := election.New(s, "held/election")
		if err != nil {
			t.Fatal(err)
		}
		l, err := e.Campaign(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		lose(t, l)
		err = l.Proclaim(ctx, "b")
		if !errors.Is(err, concurrency.ErrNotHeld) || !errors.Is(err, election.ErrNotLeader) {
			t.Fatalf("Proclaim after loss = %v, want ErrNotLeader and ErrNotHeld", err)
		}
		if !errors.Is(err, concurrency.ErrKeyDeleted) {
			t.Fatalf("Proclaim after loss = %v: the cause (ErrKeyDeleted) is not in the chain", err)
		}
	})
	t.Run("permit", func(t *testing.T) {
		s := newSession(t, srv.Client)
		sem, err := semaphore.New(s, "held/sem", 2)
		if err != nil {
			t.Fatal(err)
		}
		defer sem.Close(ctx)
		p, err := sem.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lose(t, p)
		if _, err := p.Guard().Do(ctx, put); !errors.Is(err, concurrency.ErrNotHeld) {
			t.Fatalf("permit's guarded write after loss = %v, want ErrNotHeld", err)
		}
	})
	t.Run("claim", func(t *testing.T) {
		s := newSession(t, srv.Client)
		q, err := queue.New(srv.Client, "held/queue")
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := q.Enqueue(ctx, []byte("job")); err != nil {
				t.Fatal(err)
			}
		}
		for _, settle := range []func(*queue.Claim) error{
			func(c *queue.Claim) error { return c.Ack(ctx) },
			func(c *queue.Claim) error { return c.Nack(ctx, 0) },
		} {
			c, err := q.Consumer(s).Claim(ctx)
			if err != nil {
				t.Fatal(err)
			}
			saver, _, err := checkpoint.Open(ctx, srv.Client, "held/task-"+c.ID(), c.Guard())
			if err != nil {
				t.Fatal(err)
			}
			lose(t, c)
			err = settle(c)
			if !errors.Is(err, concurrency.ErrNotHeld) || !errors.Is(err, queue.ErrClaimLost) {
				t.Fatalf("settling a lost claim = %v, want ErrClaimLost and ErrNotHeld", err)
			}
			if _, err := saver.Save(ctx, []byte("step 1")); !errors.Is(err, concurrency.ErrNotHeld) {
				t.Fatalf("checkpoint save after the claim was lost = %v, want ErrNotHeld", err)
			}
		}
	})
}

// guardKey is the key a held resource's guard compares: the one to delete
// to take the resource away.
func guardKey(t *testing.T, h concurrency.Held) string {
	t.Helper()
	cmps := h.Guard().Cmps()
	if len(cmps) != 1 {
		t.Fatalf("guard has %d comparisons", len(cmps))
	}
	return string(cmps[0].KeyBytes())
}

// Do runs fn under a held resource: fn's context ends with the loss's cause,
// and the resource is released only after fn returns; a normal return
// releases it too.
func TestDo(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client)
	m, err := lock.NewMutex(s, "do/lock")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	key := guardKey(t, m)
	err = concurrency.Do(ctx, m, func(fctx context.Context) error {
		// The delete's own context is the test's: fn's may end (the loss
		// seen by the hold's watch) before the delete's answer arrives.
		if _, err := srv.Client.Delete(ctx, key); err != nil {
			return err
		}
		<-fctx.Done()
		if !errors.Is(context.Cause(fctx), concurrency.ErrKeyDeleted) {
			t.Errorf("fn's cause = %v, want ErrKeyDeleted", context.Cause(fctx))
		}
		return context.Cause(fctx)
	})
	if !errors.Is(err, concurrency.ErrKeyDeleted) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	ran := false
	if err := concurrency.Do(ctx, m, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do = %v (ran %v)", err, ran)
	}
	if !errors.Is(m.Err(), concurrency.ErrReleased) {
		t.Fatalf("after Do the lock's Err = %v, want ErrReleased", m.Err())
	}
	resp, err := srv.Client.Get(ctx, "do/lock", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("after Do %d keys remain (%v)", resp.Count, err)
	}
}
