package queue_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	clientv3 "go.etcd.io/etcd/client/v3"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"
)

// The queue benchmarks run concord's queue and etcd's recipes Queue on the
// same embedded server (fsync on) in the same run:
//
//	go test -run '^$' -bench . -benchtime 400x ./queue

func BenchmarkEnqueue(b *testing.B) {
	srv := embedtest.Start(b)
	ctx := context.Background()
	b.Run("concord", func(b *testing.B) {
		q, _ := queue.New(srv.Client, "bench-enq")
		for range b.N {
			if _, err := q.Enqueue(ctx, []byte("x")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("etcd", func(b *testing.B) {
		q := recipe.NewQueue(srv.Client, "bench-enq-etcd")
		for range b.N {
			if err := q.Enqueue("x"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDrain preloads b.N items and measures claim+ack (concord) or
// Dequeue (etcd, which deletes on dequeue: a crash loses the item) with C
// consumers, each on its own connection.
// benchRun makes each run's queue name fresh: etcd keeps deleted keys in
// its index until compaction, so a reused name slows every later run.
var benchRun atomic.Int64

func BenchmarkDrain(b *testing.B) {
	srv := embedtest.Start(b)
	for _, consumers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("concord/consumers=%d", consumers), func(b *testing.B) {
			name := fmt.Sprintf("bench-drain-%d-%d-%d", consumers, b.N, benchRun.Add(1))
			q, _ := queue.New(srv.Client, name)
			compactBefore(b, srv)
			preload(b, func() error { _, err := q.Enqueue(context.Background(), []byte("x")); return err })
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			start := time.Now()
			runConsumers(b, srv, consumers, func(c *clientv3.Client) error {
				s, err := concurrency.NewSession(context.Background(), c, concurrency.WithTTL(10*time.Second))
				if err != nil {
					return err
				}
				defer s.Close(context.Background())
				qc, _ := queue.New(c, name)
				for left.Add(-1) >= 0 {
					cl, err := qc.Consumer(s).Claim(context.Background())
					if err != nil {
						return err
					}
					if err := cl.Ack(context.Background()); err != nil {
						return err
					}
				}
				return nil
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "items/s")
		})
		b.Run(fmt.Sprintf("etcd/consumers=%d", consumers), func(b *testing.B) {
			name := fmt.Sprintf("bench-drain-etcd-%d-%d-%d", consumers, b.N, benchRun.Add(1))
			q := recipe.NewQueue(srv.Client, name)
			compactBefore(b, srv)
			preload(b, func() error { return q.Enqueue("x") })
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			start := time.Now()
			runConsumers(b, srv, consumers, func(c *clientv3.Client) error {
				qc := recipe.NewQueue(c, name)
				for left.Add(-1) >= 0 {
					if _, err := qc.Dequeue(); err != nil {
						return err
					}
				}
				return nil
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "items/s")
		})
	}
}

// compactBefore compacts the server, so each run starts with an index free
// of the keys earlier runs deleted.
func compactBefore(b *testing.B, srv *embedtest.Server) {
	b.Helper()
	if _, err := srv.Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func preload(b *testing.B, enqueue func() error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	per := (b.N + 7) / 8
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * per; i < min((w+1)*per, b.N); i++ {
				if err := enqueue(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func runConsumers(b *testing.B, srv *embedtest.Server, n int, consume func(*clientv3.Client) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := consume(c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkWakeup measures enqueue -> blocked consumer latency, with fsync
// on and off.
func BenchmarkWakeup(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		var opts []embedtest.Option
		if !fsync {
			opts = append(opts, embedtest.NoFsync())
		}
		srv := embedtest.Start(b, opts...)
		ctx := context.Background()
		b.Run(fmt.Sprintf("concord/fsync=%v", fsync), func(b *testing.B) {
			name := fmt.Sprintf("bench-wake-%v", fsync)
			q, _ := queue.New(srv.Client, name)
			c, _ := srv.NewClient()
			s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(ctx)
			qc, _ := queue.New(c, name)
			measureWakeup(b, func() error { _, err := q.Enqueue(ctx, []byte("x")); return err }, func(delivered func()) error {
				cl, err := qc.Consumer(s).Claim(ctx)
				if err != nil {
					return err
				}
				delivered()
				return cl.Ack(ctx)
			}, func() bool {
				resp, _ := srv.Client.Get(ctx, name+"/.q/w/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				return resp != nil && resp.Count == 1
			})
		})
		// The floor: the least any queue on etcd can do, a put, its watch
		// event, and one write by the woken consumer (raw clientv3).
		b.Run(fmt.Sprintf("floor/fsync=%v", fsync), func(b *testing.B) {
			c, _ := srv.NewClient()
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			wch := c.Watch(wctx, "bench-floor/", clientv3.WithPrefix())
			n := 0
			measureWakeup(b, func() error {
				n++
				_, err := srv.Client.Put(ctx, fmt.Sprintf("bench-floor/%d", n), "x")
				return err
			}, func(delivered func()) error {
				wr := <-wch
				if err := wr.Err(); err != nil {
					return err
				}
				_, err := c.Put(ctx, "bench-floor-claimed/"+string(wr.Events[0].Kv.Key), "x")
				delivered()
				return err
			}, func() bool { return true })
		})
		b.Run(fmt.Sprintf("etcd/fsync=%v", fsync), func(b *testing.B) {
			name := fmt.Sprintf("bench-wake-etcd-%v", fsync)
			q := recipe.NewQueue(srv.Client, name)
			c, _ := srv.NewClient()
			qc := recipe.NewQueue(c, name)
			measureWakeup(b, func() error { return q.Enqueue("x") }, func(delivered func()) error {
				_, err := qc.Dequeue()
				delivered()
				return err
			}, func() bool { return true })
		})
	}
}

// measureWakeup starts a blocked consumer, waits until it is blocked, then
// enqueues and times the delivery (concord's Ack comes after it, outside
// the measurement; etcd's Dequeue deletes as it delivers).
func measureWakeup(b *testing.B, enqueue func() error, consume func(delivered func()) error, blocked func() bool) {
	lat := make([]time.Duration, 0, b.N)
	for range b.N {
		got := make(chan time.Time, 1)
		errc := make(chan error, 1)
		go func() {
			var at time.Time
			if err := consume(func() { at = time.Now() }); err != nil {
				errc <- err
				return
			}
			got <- at
		}()
		deadline := time.Now().Add(5 * time.Second)
		for !blocked() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // the consumer's watch is open
		start := time.Now()
		if err := enqueue(); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-got:
			lat = append(lat, at.Sub(start))
		case err := <-errc:
			b.Fatal(err)
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
