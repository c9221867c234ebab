package semaphore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
)

// scaleWaiters are the line lengths BenchmarkSemaphoreWaiters compares: a
// few waiters, a thousand, and a rollout's worth of hosts on one semaphore.
var scaleWaiters = []int{10, 1_000, 10_000}

// scaleLimit is the semaphore's limit: hosts upgrading at once.
const scaleLimit = 10

// scaleSessions is how many sessions (each on its own connection) the
// waiters are spread over, as hosts of a fleet would be.
const scaleSessions = 100

// scaleTTL is the TTL of the waiters' sessions: long enough that a loaded
// machine never loses one mid-run.
const scaleTTL = 30 * time.Second

// scaleTimeout bounds one run of a scale benchmark, set-up included.
const scaleTimeout = 15 * time.Minute

// scaleWave is how many waiters join the line at a time, each wave once
// the last is in line, as BenchmarkLockWaiters joins. Every join reads the
// line sorted by create revision (all of it: etcd sorts no other way), so
// waves of 500 at 7,500 waiters timed out ("etcdserver: request timed
// out"); 10,000 at once overload any etcd (for its own Mutex as well).
var scaleWave = embedtest.BenchWave(100) // CONCORD_SCALE_WAVE sets it

// BenchmarkSemaphoreWaiters measures permit handoffs of one semaphore of
// limit 10 with 10, 1,000 and 10,000 waiters in line behind the holders,
// spread over 100 sessions (one Semaphore value per session, its waiters
// acquiring on it at once). The question is whether a handoff costs more
// when the line is long: the target (#16) is requests per handoff and
// handoff p99 at 10,000 within 20% of those at 10. etcd has no semaphore
// recipe; floor is one put and its watch event per handoff on the same
// server. fsync is off: the figures are the server's work, not the disk's.
//
// A gate session takes the 10 permits first; every waiter joins and the
// server's watcher count settles; then each iteration releases the oldest
// permit and times until the next waiter's Acquire returns; the released
// waiter acquires again, at the tail of the line, so the line keeps its
// length. Reported: handoffs/s, handoff p50/p99/max; unary requests per
// handoff (client-side, all waiters) and the server's stats per handoff
// (embedtest.ServerStats.Report); srv-watchers and srv-watch-streams (the
// server's gauges with the whole line waiting); heap-B/waiter (this
// process's heap and stacks per waiter, embedded including the server's
// share); join-s (the line's joining, until the watchers settle); and,
// when b.N reaches the line's length, drain-s (the time for the whole line
// to get a permit once). Never more than 10 permits are held at once (by
// the grants this benchmark sees). Run each once on a quiet machine:
//
//	go test -c -o /tmp/semaphore.test ./semaphore
//	CONCORD_ETCD_BIN=~/.cache/concord/etcd/3.7.3/etcd /tmp/semaphore.test -test.run '^$' -test.bench SemaphoreWaiters -test.benchtime 1000x -test.timeout 60m
func BenchmarkSemaphoreWaiters(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
			for _, w := range scaleWaiters {
				b.Run(fmt.Sprintf("concord/limit=%d/waiters=%d", scaleLimit, w), func(b *testing.B) {
					benchSemWaiters(b, srv, w)
				})
			}
			b.Run("floor", func(b *testing.B) { benchFloorPuts(b, srv, 1, "handoff") })
		})
	}
}

// scaleWaiter is one host in line: its session's semaphore and, while it
// holds one, its permit.
type scaleWaiter struct {
	sem *semaphore.Semaphore
	p   *semaphore.Permit
}

// openSemWaiters connects min(n, scaleSessions) clients, each with one
// session and one Semaphore value, and spreads n waiters over them.
func openSemWaiters(b *testing.B, ctx context.Context, srv *embedtest.Server, rc *rpcCounts, name string, n int) []*scaleWaiter {
	b.Helper()
	sessions := min(n, scaleSessions)
	var out []*scaleWaiter
	for i := range sessions {
		c := instrumentedClient(b, srv, rc)
		s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(scaleTTL))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close(context.Background()) })
		sem, err := semaphore.New(s, name, scaleLimit)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = sem.Close(context.Background()) })
		per := n / sessions
		if i < n%sessions {
			per++
		}
		for range per {
			out = append(out, &scaleWaiter{sem: sem})
		}
	}
	return out
}

func benchSemWaiters(b *testing.B, srv *embedtest.Server, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), scaleTimeout)
	defer cancel()
	var rc rpcCounts
	name := benchName("scale", scaleLimit, n)
	gate := openSemWaiters(b, ctx, srv, new(rpcCounts), name, 1)[0]
	var gatePermits []*semaphore.Permit
	for range scaleLimit {
		p, err := gate.sem.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		gatePermits = append(gatePermits, p)
	}
	ws := openSemWaiters(b, ctx, srv, &rc, name, n)
	mem0 := embedtest.LiveHeap()

	runCtx, stop := context.WithCancel(ctx)
	granted := make(chan int, n)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	acquire := func(i int) {
		wg.Go(func() {
			p, err := ws[i].sem.Acquire(runCtx)
			if err != nil {
				if runCtx.Err() == nil {
					select {
					case errc <- fmt.Errorf("waiter %d: Acquire: %w", i, err):
					default: // one error is enough to fail the run
					}
				}
				return
			}
			ws[i].p = p
			granted <- i
		})
	}
	joinStart := time.Now()
	for i := range n {
		acquire(i)
		if (i+1)%scaleWave == 0 && i+1 < n {
			embedtest.BenchAwaitKeys(b, ctx, srv, name+"/.sem/p/", i+1+scaleLimit, errc)
		}
	}
	gauges := embedtest.BenchAwaitLine(b, ctx, srv, name+"/.sem/p/", n+scaleLimit, errc)
	joined := time.Since(joinStart)
	mem := embedtest.LiveHeap() - mem0

	// held are the holders, oldest first; -1 is a gate permit.
	held := make([]int, scaleLimit)
	for i := range held {
		held[i] = -1
	}
	release := func(h int) error {
		if h < 0 {
			p := gatePermits[0]
			gatePermits = gatePermits[1:]
			return p.Release(ctx)
		}
		return ws[h].p.Release(ctx)
	}
	lat := make([]time.Duration, 0, b.N)
	var drain time.Duration
	u0 := rc.unary.Load()
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	start := time.Now()
	for k := range b.N {
		h := held[0]
		held = held[1:]
		t0 := time.Now()
		if err := release(h); err != nil {
			b.Fatalf("handoff %d: Release: %v", k, err)
		}
		if h >= 0 {
			acquire(h) // back in line, at its tail
		}
		select {
		case g := <-granted:
			held = append(held, g)
		case err := <-errc:
			b.Fatalf("handoff %d: %v", k, err)
		case <-ctx.Done():
			b.Fatalf("handoff %d: no grant within %v", k, scaleTimeout)
		}
		lat = append(lat, time.Since(t0))
		if len(held) > scaleLimit {
			b.Fatalf("handoff %d: %d permits held", k, len(held))
		}
		if k+1 == n {
			drain = time.Since(start)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	u := rc.unary.Load() - u0
	stop()
	wg.Wait()
	for _, h := range held {
		if err := release(h); err != nil {
			b.Errorf("last Release: %v", err)
		}
	}

	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handoffs/s")
	reportLatency(b, lat)
	b.ReportMetric(float64(u)/float64(b.N), "unary/handoff")
	st.Report(b, srv, b.N, "handoff")
	b.ReportMetric(gauges["etcd_debugging_mvcc_watcher_total"], "srv-watchers")
	b.ReportMetric(gauges["etcd_debugging_mvcc_watch_stream_total"], "srv-watch-streams")
	b.ReportMetric(float64(mem)/float64(n), "heap-B/waiter")
	b.ReportMetric(joined.Seconds(), "join-s")
	if drain > 0 {
		b.ReportMetric(drain.Seconds(), "drain-s")
	}
}
