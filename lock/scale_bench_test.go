package lock_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	etcdconc "go.etcd.io/etcd/client/v3/concurrency"
)

// scaleWaiters are the line lengths BenchmarkLockWaiters compares: a few
// waiters, and a rollout's worth of hosts on one lock.
var scaleWaiters = []int{10, 10_000}

// scaleSessions is how many sessions (each on its own connection) the
// waiters are spread over, as hosts of a fleet would be.
const scaleSessions = 100

// scaleTTL is the TTL of the waiters' sessions: long enough that a loaded
// machine never loses one mid-run.
const scaleTTL = 30 * time.Second

// scaleTimeout bounds one run of a scale benchmark, set-up included.
const scaleTimeout = 15 * time.Minute

// scaleWave is how many waiters join the line at a time, each wave once
// the last is in line. On main at cf677bb 10,000 joining at once failed,
// concord's and etcd's alike: each join reads the line sorted by create
// revision, which etcd answers by reading and sorting every key of it (a
// limit does not cut a sorted read short), so the server's apply fell more
// than 5,000 entries behind ("etcdserver: too many requests") or requests
// timed out ("etcdserver: request timed out"); in waves of 500 a join
// still timed out at about 5,600 waiters.
var scaleWave = embedtest.BenchWave(100) // CONCORD_SCALE_WAVE sets it

// BenchmarkLockWaiters measures handoffs of one lock with a line of 10 and
// of 10,000 waiters, spread over 100 sessions (concord: 100 Mutex values on
// each; etcd's Mutex keys its waiter by its session's lease, so etcd gets
// one session per waiter, 100 on each connection). The question is whether
// a handoff costs more when the line is long: a herd (every waiter woken
// or re-reading per handoff) or growth with the line would show here; the
// target (#16) is requests per handoff and handoff p99 at 10,000 within
// 20% of those at 10. fsync is off: the figures are the server's work, not
// the disk's.
//
// A gate holder takes the lock first; the waiters join (100 at a time,
// scaleWave) and the server's watcher count settles; then each iteration
// releases the holder and times until the next waiter's Lock returns; the
// released waiter joins the line
// again at its tail (its join is counted in the handoff's requests), so the
// line stays at its length. Reported: handoffs/s, handoff p50/p99/max;
// unary requests per handoff (client-side, all waiters) and the server's
// stats per handoff (embedtest.ServerStats.Report: unary requests, watch
// requests, responses and events); srv-watchers and srv-watch-streams (the
// server's gauges with the whole line waiting); heap-B/waiter (this
// process's heap and stacks per waiter, which embedded includes the
// server's share of); join-s (the line's joining, until the watchers
// settle); and, when b.N reaches the line's length, drain-s (the time for
// the whole line to get the lock once). Concord's fencing tokens must
// strictly increase. floor is one put and its watch event per handoff on
// the same server. Run each once on a quiet machine (on main a handoff
// with 10,000 waiting took about 35-50 ms, so 2000x is minutes per case and
// drain-s, which needs 10000x, is left out):
//
//	go test -c -o /tmp/lock.test ./lock
//	CONCORD_ETCD_BIN=~/.cache/concord/etcd/3.7.3/etcd /tmp/lock.test -test.run '^$' -test.bench LockWaiters -test.benchtime 2000x -test.timeout 90m
func BenchmarkLockWaiters(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
			for _, impl := range []string{"concord", "etcd"} {
				for _, w := range scaleWaiters {
					b.Run(fmt.Sprintf("%s/waiters=%d", impl, w), func(b *testing.B) {
						benchWaiters(b, srv, impl, w)
					})
				}
			}
			b.Run("floor", func(b *testing.B) {
				reportScaleLatency(b, embedtest.BenchFloor(b, srv, 1, "handoff"))
			})
		})
	}
}

// scaleLocker is one waiter: a lock value it takes and gives back.
type scaleLocker struct {
	l     benchLocker
	token func() int64 // concord's fencing token of the hold; nil for etcd
}

// openWaiters connects sessions clients (each its own connection) and
// opens n lockers named name spread evenly over them.
func openWaiters(b *testing.B, ctx context.Context, srv *embedtest.Server, rc *rpcCounter, impl, name string, n int) []scaleLocker {
	b.Helper()
	sessions := min(n, scaleSessions)
	var out []scaleLocker
	for i := range sessions {
		c := newBenchClient(b, srv, rc)
		b.Cleanup(func() { _ = c.Close() })
		per := n/sessions + btoi(i < n%sessions)
		switch impl {
		case "concord":
			s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(scaleTTL))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close(context.Background()) })
			for range per {
				m, err := lock.NewMutex(s, name)
				if err != nil {
					b.Fatal(err)
				}
				out = append(out, scaleLocker{l: m, token: func() int64 { return int64(m.Token()) }})
			}
		default:
			for range per {
				s, err := etcdconc.NewSession(c, etcdconc.WithTTL(int(scaleTTL/time.Second)))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = s.Close() })
				out = append(out, scaleLocker{l: etcdconc.NewMutex(s, name)})
			}
		}
	}
	return out
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

func benchWaiters(b *testing.B, srv *embedtest.Server, impl string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), scaleTimeout)
	defer cancel()
	rc := newRPCCounter()
	name := benchLockName(b)
	gate := openWaiters(b, ctx, srv, newRPCCounter(), impl, name, 1)[0]
	ws := openWaiters(b, ctx, srv, rc, impl, name, n)
	if err := gate.l.Lock(ctx); err != nil {
		b.Fatal(err)
	}
	mem0 := embedtest.LiveHeap()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	granted := make(chan int, n)
	errc := make(chan error, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	acquire := func(i int) {
		wg.Go(func() {
			if err := ws[i].l.Lock(runCtx); err != nil {
				if runCtx.Err() == nil {
					select {
					case errc <- fmt.Errorf("waiter %d: Lock: %w", i, err):
					default: // one error is enough to fail the run
					}
				}
				return
			}
			granted <- i
		})
	}
	joinStart := time.Now()
	for i := range n {
		acquire(i)
		if (i+1)%scaleWave == 0 && i+1 < n {
			embedtest.BenchAwaitKeys(b, ctx, srv, name+"/", i+2, errc)
		}
	}
	gauges := embedtest.BenchAwaitLine(b, ctx, srv, name+"/", n+1, errc)
	joined := time.Since(joinStart)
	mem := embedtest.LiveHeap() - mem0

	lat := make([]time.Duration, 0, b.N)
	var drain time.Duration
	var lastToken int64
	release := func(h int) error {
		if h < 0 {
			return gate.l.Unlock(ctx)
		}
		return ws[h].l.Unlock(ctx)
	}
	holder := -1
	u0 := rc.snapshot()
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	start := time.Now()
	for k := range b.N {
		t0 := time.Now()
		if err := release(holder); err != nil {
			b.Fatalf("handoff %d: Unlock: %v", k, err)
		}
		if holder >= 0 {
			acquire(holder) // back in line, at its tail
		}
		select {
		case holder = <-granted:
		case err := <-errc:
			b.Fatalf("handoff %d: %v", k, err)
		case <-ctx.Done():
			b.Fatalf("handoff %d: no grant within %v", k, scaleTimeout)
		}
		lat = append(lat, time.Since(t0))
		if k+1 == n {
			drain = time.Since(start)
		}
		if tok := ws[holder].token; tok != nil {
			t := tok()
			if t <= lastToken {
				b.Fatalf("handoff %d: token %d after %d", k, t, lastToken)
			}
			lastToken = t
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	u := rc.snapshot().since(u0)
	stop()
	wg.Wait()
	if err := release(holder); err != nil {
		b.Errorf("last Unlock: %v", err)
	}

	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handoffs/s")
	reportScaleLatency(b, lat)
	b.ReportMetric(float64(u.totalUnary())/float64(b.N), "unary/handoff")
	st.Report(b, srv, b.N, "handoff")
	b.ReportMetric(gauges["etcd_debugging_mvcc_watcher_total"], "srv-watchers")
	b.ReportMetric(gauges["etcd_debugging_mvcc_watch_stream_total"], "srv-watch-streams")
	b.ReportMetric(float64(mem)/float64(n), "heap-B/waiter")
	b.ReportMetric(joined.Seconds(), "join-s")
	if drain > 0 {
		b.ReportMetric(drain.Seconds(), "drain-s")
	}
}

// reportScaleLatency reports the p50, p99 and max of lat in milliseconds.
func reportScaleLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(quantileMs(lat, 0.5), "p50-ms")
	b.ReportMetric(quantileMs(lat, 0.99), "p99-ms")
	b.ReportMetric(quantileMs(lat, 1), "max-ms")
}

// BenchmarkCluster3Lock is BenchmarkLockContended on what production runs:
// a 3-member cluster (embedded, each member on its own loopback ports and
// data dir) with fsync on, every contender's client connected to all
// members. Handoffs of one lock among 2, 8 and 32 contenders, concord's
// Mutex and etcd's on the same cluster in the same run, beside the floor
// (one put and its watch event per handoff: the least any lock on etcd can
// cost). Reported as BenchmarkLockContended reports; the server's stats
// count every member's requests, and proc-cpu is the whole process (the
// three members and the clients).
//
//	go test -c -o /tmp/lock.test ./lock
//	/tmp/lock.test -test.run '^$' -test.bench Cluster3Lock -test.benchtime 300x
func BenchmarkCluster3Lock(b *testing.B) {
	srv := embedtest.StartBenchCluster(b, 3)
	for _, impl := range benchImpls {
		for _, n := range []int{2, 8, 32} {
			b.Run(fmt.Sprintf("%s/contenders=%d", impl.name, n), func(b *testing.B) {
				benchContended(b, srv, impl, n)
			})
		}
	}
	b.Run("floor", func(b *testing.B) { benchFloor(b, srv) })
}
