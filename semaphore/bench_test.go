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
// their unary requests in rc. It returns them and the key prefix of the
// line.
func newContenders(b *testing.B, srv *embedtest.Server, impl, name string, limit, n int, rc *rpcCounts) ([]contender, string) {
	var out []contender
	for range n {
		c := instrumentedClient(b, srv, rc)
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
	if impl == "concord" {
		return out, name + "/.sem/p/"
	}
	return out, name + "/"
}

var benchRun atomic.Int64

func benchName(impl string, limit, n int) string {
	return fmt.Sprintf("bench-%s-%d-%d-%d", impl, limit, n, benchRun.Add(1))
}

// BenchmarkAcquireRelease: contenders, each on its own connection, take a
// permit and give it back as fast as they can. Reported: grants per second
// and unary requests per grant (acquire and release, all contenders). The
// peer for limit 1 is etcd's concurrency.Mutex on the same server.
//
//	go test -run '^$' -bench AcquireRelease -benchtime=200x ./semaphore
func BenchmarkAcquireRelease(b *testing.B) {
	srv := embedtest.Start(b)
	type cfg struct {
		impl  string
		limit int
	}
	for _, c := range []cfg{{"concord", 1}, {"concord", 4}, {"etcd-mutex", 1}} {
		for _, n := range []int{1, 4, 16, 32} {
			b.Run(fmt.Sprintf("%s/limit=%d/contenders=%d", c.impl, c.limit, n), func(b *testing.B) {
				var rc rpcCounts
				cs, _ := newContenders(b, srv, c.impl, benchName(c.impl, c.limit, n), c.limit, n, &rc)
				ctx := context.Background()
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				errs := make(chan error, n)
				before := rc.unary.Load()
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
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "grants/s")
				b.ReportMetric(float64(rc.unary.Load()-before)/float64(b.N), "reqs/grant")
			})
		}
	}
}

// BenchmarkHandoff: limit holders and 4 waiters, each on its own
// connection. Each iteration releases the oldest permit and times until
// the next waiter's Acquire returns; the releaser then queues again.
// Reported: handoff p50 and p99, and unary requests from the release to
// the grant (all contenders); baseline/put is one Put's latency on the same
// server, the floor under any handoff.
//
//	go test -run '^$' -bench Handoff -benchtime=200x ./semaphore
func BenchmarkHandoff(b *testing.B) {
	srv := embedtest.Start(b)
	type cfg struct {
		impl  string
		limit int
	}
	for _, c := range []cfg{{"concord", 1}, {"concord", 4}, {"concord", 16}, {"etcd-mutex", 1}} {
		b.Run(fmt.Sprintf("%s/limit=%d", c.impl, c.limit), func(b *testing.B) {
			const waiting = 4
			n := c.limit + waiting
			var rc rpcCounts
			cs, prefix := newContenders(b, srv, c.impl, benchName(c.impl, c.limit, n), c.limit, n, &rc)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			grants := make(chan int, n)
			var wg sync.WaitGroup
			queue := func(i int) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if cs[i].acquire(ctx) == nil {
						grants <- i
					}
				}()
				waitKeys(b, srv.Client, prefix, i, n)
			}
			var held []int
			for i := range n {
				queue(i)
				if i < c.limit {
					held = append(held, <-grants)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			var reqs int64
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
		})
	}
	// The floor: one write's latency on the same server (a handoff needs
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
}

// waitKeys polls until the line under prefix holds n keys (contender i
// has just queued).
func waitKeys(b *testing.B, c *clientv3.Client, prefix string, i, n int) {
	want := int64(min(i+1, n))
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if resp.Count >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d keys under %s, want %d", resp.Count, prefix, want)
		}
		time.Sleep(200 * time.Microsecond)
	}
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
