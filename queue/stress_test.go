package queue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Producers and consumers run together while consumers are killed mid-item
// (their session revoked). Every acknowledged enqueue must be acked exactly
// once and nothing unknown may appear.
func TestStressNoLossNoDoubleAck(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client, queue.WithMaxDeliveries(0))
	const producers, perProducer, consumers = 3, 40, 4

	var mu sync.Mutex
	enqueued := map[string]bool{}
	acked := map[string]int{}
	var kills atomic.Int32

	var pwg sync.WaitGroup
	for p := range producers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for i := range perProducer {
				id, err := q.Enqueue(ctx, fmt.Appendf(nil, "p%d-%03d", p, i))
				if err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				mu.Lock()
				enqueued[id] = true
				mu.Unlock()
			}
		}()
	}

	cctx, stop := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	for w := range consumers {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for n := 0; cctx.Err() == nil; n++ {
				s, err := concurrency.NewSession(cctx, srv.Client, concurrency.WithTTL(2*time.Second))
				if err != nil {
					return
				}
				for cctx.Err() == nil {
					c, err := q.Consumer(s).Claim(cctx)
					if err != nil {
						break
					}
					// Now and then a consumer dies holding its item.
					if (w+n)%3 == 0 && kills.Load() < 6 && len(c.Payload())%2 == 0 {
						kills.Add(1)
						_, _ = srv.Client.Revoke(ctx, s.Lease())
						if err := c.Ack(ctx); !errors.Is(err, queue.ErrClaimLost) {
							t.Errorf("ack after own lease revoked = %v", err)
						}
						break
					}
					if err := c.Ack(ctx); err != nil {
						if !errors.Is(err, queue.ErrClaimLost) {
							t.Errorf("ack: %v", err)
						}
						continue
					}
					mu.Lock()
					acked[c.ID()]++
					mu.Unlock()
				}
				_ = s.Close(context.Background())
			}
		}()
	}
	pwg.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n == producers*perProducer {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items acked after 60s", n, producers*perProducer)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	cwg.Wait()
	for id, n := range acked {
		if !enqueued[id] {
			t.Errorf("acked %s, never enqueued", id)
		}
		if n != 1 {
			t.Errorf("%s acked %d times", id, n)
		}
	}
	if kills.Load() == 0 {
		t.Fatal("no consumer was killed: the run tested nothing")
	}
	if n, err := q.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len after the run = %d %v", n, err)
	}
}

// countingClient returns a client whose unary requests are counted.
func countingClient(t *testing.T, srv *embedtest.Server, n *atomic.Int64) *clientv3.Client {
	return interceptedClient(t, srv, func(_, _ any, err error) error { n.Add(1); return err })
}

// The requests spent delivering an item to a blocked consumer do not grow
// with the number of consumers waiting.
func TestNoHerdOnEnqueue(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	perItem := func(waiters int) float64 {
		var n atomic.Int64
		c := countingClient(t, srv, &n)
		name := fmt.Sprintf("herd-%d", waiters)
		q, err := queue.New(c, name)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		s := newSession(t, c, 10*time.Second)
		got := make(chan *queue.Claim, waiters)
		var wg sync.WaitGroup
		for range waiters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					cl, err := q.Consumer(s).Claim(ctx)
					if err != nil {
						return
					}
					got <- cl
				}
			}()
		}
		// Let every consumer join the line.
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := srv.Client.Get(ctx, name+"/.q/w/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count == int64(waiters) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d consumers in line", resp.Count, waiters)
			}
			time.Sleep(10 * time.Millisecond)
		}
		const items = 20
		before := n.Load()
		for i := range items {
			if _, err := q.Enqueue(ctx, fmt.Appendf(nil, "%d", i)); err != nil {
				t.Fatal(err)
			}
			cl := <-got
			if err := cl.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		spent := float64(n.Load()-before) / items
		cancel()
		wg.Wait()
		return spent
	}
	few, many := perItem(2), perItem(40)
	t.Logf("unary requests per item: %.1f with 2 waiting consumers, %.1f with 40", few, many)
	// O(waiters) growth would be about 20 times more; allow for noise.
	if many > 1.5*few {
		t.Fatalf("requests per item grow with waiting consumers: %.1f vs %.1f", many, few)
	}
}

// Many consumers racing for a preloaded queue all get items: a consumer
// that loses every race for the items it read must look again, not wait for
// an enqueue that never comes.
func TestManyConsumersDrainPreloaded(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	q := newQueue(t, srv.Client)
	const items, consumers = 120, 16
	for range items {
		enqueue(t, q, "x")
	}
	var left atomic.Int64
	left.Store(items)
	var wg sync.WaitGroup
	for range consumers {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		s := newSession(t, c, 5*time.Second)
		qc := newQueue(t, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				cl, err := qc.Consumer(s).Claim(cctx)
				cancel()
				if err != nil {
					t.Errorf("claim with items left: %v", err)
					return
				}
				if err := cl.Ack(ctx); err != nil {
					t.Errorf("ack: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, err := q.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len = %d %v", n, err)
	}
}
