package semaphore_test

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
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdconc "go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// contender is one process taking and giving back a permit: concord's
// semaphore, or (as the peer for a limit of 1) etcd's Mutex.
type contender interface {
	acquire(ctx context.Context) error
	release(ctx context.Context) error
}

type semContender struct {
	sem *semaphore.Semaphore
	p   *semaphore.Permit
}

func (c *semContender) acquire(ctx context.Context) (err error) {
	c.p, err = c.sem.Acquire(ctx)
	return err
}
func (c *semContender) release(ctx context.Context) error { return c.p.Release(ctx) }

type mutexContender struct{ m *etcdconc.Mutex }

func (c *mutexContender) acquire(ctx context.Context) error { return c.m.Lock(ctx) }
func (c *mutexContender) release(ctx context.Context) error { return c.m.Unlock(ctx) }

// newContenders makes n contenders, each on its own connection, counting
// their unary requests in rc. It returns them and, for each, a channel
// that gets a value (if empty) whenever one of its Txns is answered: an
// acquire's first Txn is its join (for concord's semaphore and etcd's
// Mutex alike), so after it the contender is in line, and nobody has to
// ask the server.
func newContenders(b *testing.B, srv *embedtest.Server, impl, name string, limit, n int, rc *rpcCounts) ([]contender, []chan struct{}) {
	var out []contender
	var txns []chan struct{}
	for range n {
		txn := make(chan struct{}, 1)
		txns = append(txns, txn)
		c := benchClient(b, srv, rc, txn)
		switch impl {
		case "concord":
			s, err := concurrency.NewSession(context.Background(), c, concurrency.WithTTL(10*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close(context.Background()) })
			sem, err := semaphore.New(s, name, limit)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = sem.Close(context.Background()) })
			out = append(out, &semContender{sem: sem})
		default:
			s, err := etcdconc.NewSession(c, etcdconc.WithTTL(10))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			out = append(out, &mutexContender{m: etcdconc.NewMutex(s, name)})
		}
	}
	return out, txns
}

// benchClient is instrumentedClient that also signals txn (without
// blocking) whenever a Txn is answered without error.
func benchClient(b *testing.B, srv *embedtest.Server, rc *rpcCounts, txn chan struct{}) *clientv3.Client {
	b.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				rc.unary.Add(1)
				err := invoker(ctx, method, req, reply, cc, opts...)
				if err == nil && method == "/etcdserverpb.KV/Txn" {
					select {
					case txn <- struct{}{}:
					default:
					}
				}
				return err
			}),
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return srv.Confine(c)
}

var benchRun atomic.Int64

func benchName(impl string, limit, n int) string {
	return fmt.Sprintf("bench-%s-%d-%d-%d", impl, limit, n, benchRun.Add(1))
}

// BenchmarkAcquireRelease: contenders, each on its own connection, take a
// permit and give it back as fast as they can. Reported: grants per second
// and unary requests per grant (acquire and release, all contenders), and
// the server's own stats per grant (embedtest.ServerStats.Report: its CPU,
// unary requests, watch requests and responses, events). The peer for
// limit 1 is etcd's concurrency.Mutex on the same server; floor is one put
// and its watch event per grant (benchFloorPuts), the least a grant that
// someone waits for can cost (an uncontended grant needs one write, and a
// grant with its release two). Each runs against a separate etcd process
// first (CONCORD_ETCD_BIN), then embedded.
//
//	go test -run '^$' -bench AcquireRelease -benchtime=200x ./semaphore
func BenchmarkAcquireRelease(b *testing.B) {
	type cfg struct {
		impl  string
		limit int
	}
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			for _, c := range []cfg{{"concord", 1}, {"concord", 4}, {"etcd-mutex", 1}} {
				for _, n := range []int{1, 4, 16, 32} {
					b.Run(fmt.Sprintf("%s/limit=%d/contenders=%d", c.impl, c.limit, n), func(b *testing.B) {
						benchAcquireRelease(b, srv, c.impl, c.limit, n)
					})
				}
			}
			b.Run("floor", func(b *testing.B) { benchFloorPuts(b, srv, 1, "grant") })
		})
	}
}

func benchAcquireRelease(b *testing.B, srv *embedtest.Server, impl string, limit, n int) {
	var rc rpcCounts
	cs, _ := newContenders(b, srv, impl, benchName(impl, limit, n), limit, n, &rc)
	ctx := context.Background()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	before := rc.unary.Load()
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	start := time.Now()
	for _, ct := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := ct.acquire(ctx); err != nil {
					errs <- err
					return
				}
				if err := ct.release(ctx); err != nil {
					errs <- err
					return
				}
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
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "grants/s")
	b.ReportMetric(float64(rc.unary.Load()-before)/float64(b.N), "reqs/grant")
	st.Report(b, srv, b.N, "grant")
}

// BenchmarkHandoff: limit holders and 4 waiters, each on its own
// connection. Each iteration releases the oldest permit and times until
// the next waiter's Acquire returns; the releaser then queues again (and
// the iteration ends when its join is answered). Reported: handoff p50 and
// p99, unary requests from the release to the grant (all contenders), and
// the server's stats per handoff (the releaser's join again included: a
// release and a join are two writes, so about twice the floor is the
// least this loop can cost). baseline/put is one Put's latency on the
// same server; floor is one put and its watch event per handoff
// (benchFloorPuts), the least any handoff can cost the server;
// floor2r1w4rw adds what this loop cannot do without: the releaser's join
// (a second write), the admitted waiter's read of the limit at its grant's
// revision (a limit can be lowered), the release heard by each of the 4
// waiters (a waiter counts the holders ahead of it by their deletions; one
// that did not hear them would have to read), and the releaser's watch of
// the line opened when it joins and closed when it is granted (kept open,
// it would hear every release while it holds). Each runs
// against a separate etcd process first (CONCORD_ETCD_BIN), then embedded.
//
//	go test -run '^$' -bench Handoff -benchtime=200x ./semaphore
func BenchmarkHandoff(b *testing.B) {
	type cfg struct {
		impl  string
		limit int
	}
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			for _, c := range []cfg{{"concord", 1}, {"concord", 4}, {"concord", 16}, {"etcd-mutex", 1}} {
				b.Run(fmt.Sprintf("%s/limit=%d", c.impl, c.limit), func(b *testing.B) {
					benchHandoff(b, srv, c.impl, c.limit)
				})
			}
			// One write's latency on the same server (a handoff needs
			// the releaser's write and the next holder's read).
			b.Run("baseline/put", func(b *testing.B) {
				lat := make([]time.Duration, 0, b.N)
				for i := range b.N {
					start := time.Now()
					if _, err := srv.Client.Put(context.Background(), "bench-put", fmt.Sprint(i)); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
				}
				reportLatency(b, lat)
			})
			b.Run("floor", func(b *testing.B) { benchFloorPuts(b, srv, 1, "handoff") })
			b.Run("floor2r1w4rw", func(b *testing.B) {
				embedtest.BenchFloorCycleOf(b, srv, embedtest.FloorCycle{Writes: 2, Reads: 1, Watchers: 3, Rewatch: true}, "handoff")
			})
		})
	}
}

func benchHandoff(b *testing.B, srv *embedtest.Server, impl string, limit int) {
	const waiting = 4
	n := limit + waiting
	var rc rpcCounts
	cs, txns := newContenders(b, srv, impl, benchName(impl, limit, n), limit, n, &rc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	grants := make(chan int, n)
	var wg sync.WaitGroup
	queue := func(i int) {
		select {
		case <-txns[i]: // the release's, if it was a Txn
		default:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if cs[i].acquire(ctx) == nil {
				grants <- i
			}
		}()
		select {
		case <-txns[i]: // joined: in line behind the others
		case <-time.After(10 * time.Second):
			b.Fatalf("contender %d did not join within 10s", i)
		}
	}
	var held []int
	for i := range n {
		queue(i)
		if i < limit {
			held = append(held, <-grants)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	var reqs int64
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for range b.N {
		i := held[0]
		held = held[1:]
		before := rc.unary.Load()
		start := time.Now()
		if err := cs[i].release(ctx); err != nil {
			b.Fatal(err)
		}
		g := <-grants
		lat = append(lat, time.Since(start))
		reqs += rc.unary.Load() - before
		held = append(held, g)
		queue(i)
	}
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	cancel()
	wg.Wait()
	close(grants)
	for g := range grants {
		held = append(held, g)
	}
	for _, i := range held {
		_ = cs[i].release(context.Background())
	}
	reportLatency(b, lat)
	b.ReportMetric(float64(reqs)/float64(b.N), "reqs/handoff")
	st.Report(b, srv, b.N, "handoff")
}

// benchFloorPuts is embedtest.BenchFloor with the latencies reported here.
func benchFloorPuts(b *testing.B, srv *embedtest.Server, watchers int, op string) {
	reportLatency(b, embedtest.BenchFloor(b, srv, watchers, op))
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
