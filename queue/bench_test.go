package queue_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// The queue benchmarks run concord's queue and etcd's recipes Queue on the
// same server (fsync on unless named) in the same run, first a separate
// etcd process (CONCORD_ETCD_BIN, as production runs it), then embedded,
// each beside a floor measured on the same server: the least etcd work the
// operation could need. Besides their figures, they report the server's
// own stats per operation (embedtest.ServerStats.Report: its CPU, unary
// requests, watch requests and responses, watch events):
//
//	go test -run '^$' -bench . -benchtime 400x ./queue

// benchRun makes each run's queue name fresh: etcd keeps deleted keys in
// its index until compaction, so a reused name slows every later run.
var benchRun atomic.Int64

// BenchmarkEnqueue: one Enqueue after another. floor is one Put of a new
// key per item, the least a durable enqueue can cost.
func BenchmarkEnqueue(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			ctx := context.Background()
			b.Run("concord", func(b *testing.B) {
				q, _ := queue.New(srv.Client, fmt.Sprintf("bench-enq-%d", benchRun.Add(1)))
				measureEach(b, srv, "item", func(int) error {
					_, err := q.Enqueue(ctx, []byte("x"))
					return err
				})
			})
			b.Run("etcd", func(b *testing.B) {
				q := recipe.NewQueue(srv.Client, fmt.Sprintf("bench-enq-etcd-%d", benchRun.Add(1)))
				measureEach(b, srv, "item", func(int) error { return q.Enqueue("x") })
			})
			b.Run("floor", func(b *testing.B) {
				pfx := fmt.Sprintf("bench-enq-floor-%d/", benchRun.Add(1))
				measureEach(b, srv, "item", func(i int) error {
					_, err := srv.Client.Put(ctx, fmt.Sprintf("%s%08d", pfx, i), "x")
					return err
				})
			})
		})
	}
}

// measureEach runs op b.N times in a row and reports the server's stats
// per op, in unit.
func measureEach(b *testing.B, srv *embedtest.Server, unit string, op func(i int) error) {
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for i := range b.N {
		if err := op(i); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, unit)
}

// BenchmarkDrain preloads b.N items and measures claim+ack (concord) or
// Dequeue (etcd, which deletes on dequeue: a crash loses the item) with C
// consumers, each on its own connection. floor: the consumers delete the
// preloaded keys, each its own share, one Delete per item and no reads:
// taking an item away needs at least one write. floor2 is the least an
// at-least-once queue can do, two writes per item and no reads: a consumer
// puts a claim on the item the counter hands it, then deletes the item and
// its claim in one Txn (concord's claim and ack, without their races).
// concord-next: concord's consumers take each next item with AckNext (the
// ack and the next claim in one request while the item is free).
func BenchmarkDrain(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			benchDrain(b, srv)
		})
	}
}

func benchDrain(b *testing.B, srv *embedtest.Server) {
	for _, consumers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("concord/consumers=%d", consumers), func(b *testing.B) {
			benchDrainConcord(b, srv, consumers, func(ctx context.Context, c *queue.Consumer, left *atomic.Int64) error {
				for left.Add(-1) >= 0 {
					cl, err := c.Claim(ctx)
					if err != nil {
						return err
					}
					if err := cl.Ack(ctx); err != nil {
						return err
					}
				}
				return nil
			})
		})
		b.Run(fmt.Sprintf("concord-next/consumers=%d", consumers), func(b *testing.B) {
			benchDrainConcord(b, srv, consumers, func(ctx context.Context, c *queue.Consumer, left *atomic.Int64) error {
				var cl *queue.Claim
				var err error
				for left.Add(-1) >= 0 {
					if cl != nil {
						if cl, err = cl.AckNext(ctx); err == nil {
							continue
						} else if !errors.Is(err, queue.ErrEmpty) {
							return err
						}
					}
					if cl, err = c.Claim(ctx); err != nil {
						return err
					}
				}
				if cl != nil {
					return cl.Ack(ctx)
				}
				return nil
			})
		})
		b.Run(fmt.Sprintf("etcd/consumers=%d", consumers), func(b *testing.B) {
			name := fmt.Sprintf("bench-drain-etcd-%d-%d-%d", consumers, b.N, benchRun.Add(1))
			q := recipe.NewQueue(srv.Client, name)
			compactBefore(b, srv)
			preload(b, func(int) error { return q.Enqueue("x") })
			var left atomic.Int64
			left.Store(int64(b.N))
			runConsumers(b, srv, consumers, func(c *clientv3.Client) error {
				qc := recipe.NewQueue(c, name)
				for left.Add(-1) >= 0 {
					if _, err := qc.Dequeue(); err != nil {
						return err
					}
				}
				return nil
			})
		})
		b.Run(fmt.Sprintf("floor2/consumers=%d", consumers), func(b *testing.B) {
			pfx := fmt.Sprintf("bench-drain-floor2-%d-%d-%d/", consumers, b.N, benchRun.Add(1))
			compactBefore(b, srv)
			key := func(i int) string { return fmt.Sprintf("%sitems/%08d", pfx, i) }
			claim := func(i int) string { return fmt.Sprintf("%sclaims/%08d", pfx, i) }
			preload(b, func(i int) error { _, err := srv.Client.Put(context.Background(), key(i), "x"); return err })
			var next atomic.Int64
			runConsumers(b, srv, consumers, func(c *clientv3.Client) error {
				for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
					if _, err := c.Put(context.Background(), claim(i), "x"); err != nil {
						return err
					}
					resp, err := c.Txn(context.Background()).Then(clientv3.OpDelete(key(i)), clientv3.OpDelete(claim(i))).Commit()
					if err != nil {
						return err
					}
					if d := resp.Responses[0].GetResponseDeleteRange().Deleted; d != 1 {
						return fmt.Errorf("item %d: %d keys deleted", i, d)
					}
				}
				return nil
			})
		})
		b.Run(fmt.Sprintf("floor/consumers=%d", consumers), func(b *testing.B) {
			pfx := fmt.Sprintf("bench-drain-floor-%d-%d-%d/", consumers, b.N, benchRun.Add(1))
			compactBefore(b, srv)
			key := func(i int) string { return fmt.Sprintf("%s%08d", pfx, i) }
			preload(b, func(i int) error { _, err := srv.Client.Put(context.Background(), key(i), "x"); return err })
			var next atomic.Int64
			runConsumers(b, srv, consumers, func(c *clientv3.Client) error {
				for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
					resp, err := c.Delete(context.Background(), key(i))
					if err != nil {
						return err
					}
					if resp.Deleted != 1 {
						return fmt.Errorf("item %d: %d keys deleted", i, resp.Deleted)
					}
				}
				return nil
			})
		})
	}
}

// benchDrainConcord preloads b.N items on a new queue and drains them with
// consumers of its own (each on its own connection and session) running
// take, which takes items until left runs out.
func benchDrainConcord(b *testing.B, srv *embedtest.Server, consumers int, take func(ctx context.Context, c *queue.Consumer, left *atomic.Int64) error) {
	name := fmt.Sprintf("bench-drain-%d-%d-%d", consumers, b.N, benchRun.Add(1))
	q, _ := queue.New(srv.Client, name)
	compactBefore(b, srv)
	preload(b, func(int) error { _, err := q.Enqueue(context.Background(), []byte("x")); return err })
	var left atomic.Int64
	left.Store(int64(b.N))
	runConsumers(b, srv, consumers, func(c *clientv3.Client) error {
		ctx := context.Background()
		s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second))
		if err != nil {
			return err
		}
		defer s.Close(ctx)
		qc, _ := queue.New(c, name)
		return take(ctx, qc.Consumer(s), &left)
	})
}

// compactBefore compacts the server, so each run starts with an index free
// of the keys earlier runs deleted.
func compactBefore(b *testing.B, srv *embedtest.Server) {
	b.Helper()
	if _, err := srv.Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// preload calls enqueue(i) for each i below b.N, from 8 goroutines.
func preload(b *testing.B, enqueue func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	per := (b.N + 7) / 8
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * per; i < min((w+1)*per, b.N); i++ {
				if err := enqueue(i); err != nil {
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

// runConsumers connects n consumers, each on its own connection, then
// times them draining b.N items. Reported: items/s and the server's stats
// per item (the connections are made before; concord's consumers grant
// and revoke their sessions' leases inside, one of each per consumer).
func runConsumers(b *testing.B, srv *embedtest.Server, n int, consume func(*clientv3.Client) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var clients []*clientv3.Client
	for range n {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	start := time.Now()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := consume(c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "items/s")
	st.Report(b, srv, b.N, "item")
}

// BenchmarkWakeup measures enqueue -> blocked consumer latency, with fsync
// on and off, and the server's stats per wakeup (the whole cycle: the
// consumer's wait, the enqueue, the claim and, for concord, its ack).
// floor: the least any queue on etcd can do, a put, its watch event, and
// one write by the woken consumer (raw clientv3, its watch open all along).
func BenchmarkWakeup(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srvs := map[bool]*embedtest.Server{}
			for _, fsync := range []bool{true, false} {
				opts := where.Opts
				if !fsync {
					opts = append(slices.Clone(opts), embedtest.NoFsync())
				}
				srvs[fsync] = embedtest.Start(b, opts...)
			}
			for _, fsync := range []bool{true, false} {
				benchWakeup(b, srvs[fsync], fsync)
			}
		})
	}
}

func benchWakeup(b *testing.B, srv *embedtest.Server, fsync bool) {
	ctx := context.Background()
	b.Run(fmt.Sprintf("concord/fsync=%v", fsync), func(b *testing.B) {
		name := fmt.Sprintf("bench-wake-%v-%d", fsync, benchRun.Add(1))
		q, _ := queue.New(srv.Client, name)
		created := make(chan struct{}, 1)
		c := createdClient(b, srv, created)
		s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close(ctx)
		qc, _ := queue.New(c, name)
		measureWakeup(b, srv, func() error { _, err := q.Enqueue(ctx, []byte("x")); return err }, func(delivered func()) error {
			cl, err := qc.Consumer(s).Claim(ctx)
			if err != nil {
				return err
			}
			delivered()
			return cl.Ack(ctx)
		}, created)
	})
	b.Run(fmt.Sprintf("floor/fsync=%v", fsync), func(b *testing.B) {
		c, _ := srv.NewClient()
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		pfx := fmt.Sprintf("bench-floor-%d/", benchRun.Add(1))
		wch := c.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if wr := <-wch; !wr.Created {
			b.Fatalf("watch not created: %v", wr.Err())
		}
		n := 0
		measureWakeup(b, srv, func() error {
			n++
			_, err := srv.Client.Put(ctx, fmt.Sprintf("%s%d", pfx, n), "x")
			return err
		}, func(delivered func()) error {
			wr := <-wch
			if err := wr.Err(); err != nil {
				return err
			}
			_, err := c.Put(ctx, "bench-floor-claimed/"+string(wr.Events[0].Kv.Key), "x")
			delivered()
			return err
		}, nil)
	})
	b.Run(fmt.Sprintf("etcd/fsync=%v", fsync), func(b *testing.B) {
		name := fmt.Sprintf("bench-wake-etcd-%v-%d", fsync, benchRun.Add(1))
		q := recipe.NewQueue(srv.Client, name)
		created := make(chan struct{}, 1)
		c := createdClient(b, srv, created)
		qc := recipe.NewQueue(c, name)
		measureWakeup(b, srv, func() error { return q.Enqueue("x") }, func(delivered func()) error {
			_, err := qc.Dequeue()
			delivered()
			return err
		}, created)
	})
}

// createdClient is a client on its own connection that signals created
// (without blocking) whenever one of its watches is created: a consumer
// finding the queue empty opens a watch (concord's Claim and etcd's
// Dequeue alike), so after it the consumer is waiting, and nobody has to
// ask the server.
func createdClient(b *testing.B, srv *embedtest.Server, created chan struct{}) *clientv3.Client {
	b.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, conn *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			st, err := streamer(ctx, desc, conn, method, opts...)
			if err != nil {
				return nil, err
			}
			return createdStream{st, created}, nil
		})},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return srv.Confine(c)
}

type createdStream struct {
	grpc.ClientStream
	created chan struct{}
}

func (s createdStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if wr, ok := m.(*pb.WatchResponse); ok && err == nil && wr.Created {
		select {
		case s.created <- struct{}{}:
		default:
		}
	}
	return err
}

// measureWakeup starts a blocked consumer, waits until it is blocked (its
// watch created, when created is not nil; then 20 ms for it to finish the
// reads it makes after), then enqueues and times the delivery (concord's
// Ack comes after it, outside the latency; etcd's Dequeue deletes as it
// delivers). Reported: p50/p99 and the server's stats per wakeup.
func measureWakeup(b *testing.B, srv *embedtest.Server, enqueue func() error, consume func(delivered func()) error, created chan struct{}) {
	lat := make([]time.Duration, 0, b.N)
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for range b.N {
		if created != nil {
			select {
			case <-created:
			default:
			}
		}
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
		if created != nil {
			select {
			case <-created:
			case err := <-errc:
				b.Fatal(err)
			case <-time.After(10 * time.Second):
				b.Fatal("the consumer opened no watch within 10s")
			}
		}
		time.Sleep(20 * time.Millisecond) // the consumer's reads after its watch is open
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
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	st.Report(b, srv, b.N, "wakeup")
}
