package lock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdconc "go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// The lock benchmarks run concord's lock.Mutex and etcd's own
// client/v3/concurrency.Mutex on the same embedded server in the same run,
// with fsync on (etcd's default) and off:
//
//	go test -run '^$' -bench BenchmarkLock -benchtime 200x ./lock
//
// Every session has a 10 s TTL; every lock name is used by one run of one
// sub-benchmark only.

// benchTTL is the TTL of every benchmark session.
const benchTTL = 10 * time.Second

// benchTimeout bounds one run of a sub-benchmark body.
const benchTimeout = 5 * time.Minute

// watchMethod is the gRPC method of a watch stream.
const watchMethod = "/etcdserverpb.Watch/Watch"

// benchLocker is what the benchmarks use of a lock.
type benchLocker interface {
	Lock(ctx context.Context) error
	Unlock(ctx context.Context) error
}

// benchImpl opens a session on a client and a lock named name on it; the
// returned func closes the session.
type benchImpl struct {
	name string
	open func(ctx context.Context, c *clientv3.Client, name string) (benchLocker, func() error, error)
}

var benchImpls = []benchImpl{
	{name: "concord", open: openConcord},
	{name: "etcd", open: openEtcd},
}

func openConcord(ctx context.Context, c *clientv3.Client, name string) (benchLocker, func() error, error) {
	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(benchTTL))
	if err != nil {
		return nil, nil, err
	}
	closeSession := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), benchTTL)
		defer cancel()
		return s.Close(ctx)
	}
	m, err := lock.NewMutex(s, name)
	if err != nil {
		_ = closeSession()
		return nil, nil, err
	}
	return m, closeSession, nil
}

func openEtcd(_ context.Context, c *clientv3.Client, name string) (benchLocker, func() error, error) {
	s, err := etcdconc.NewSession(c, etcdconc.WithTTL(int(benchTTL/time.Second)))
	if err != nil {
		return nil, nil, err
	}
	return etcdconc.NewMutex(s, name), s.Close, nil
}

var benchSeq atomic.Int64

// benchLockName is a lock name not used before in this process.
func benchLockName(b *testing.B) string {
	r := strings.NewReplacer("/", "-", "=", "-")
	return fmt.Sprintf("bench/%s/%d", r.Replace(b.Name()), benchSeq.Add(1))
}

// rpcCounter counts, by method, the unary RPCs and the streams opened by the
// clients it instruments (each attempt, retries included: gRPC runs these
// interceptors inside the etcd client's retry interceptor).
type rpcCounter struct {
	mu      sync.Mutex
	unary   map[string]int64
	streams map[string]int64
}

type rpcCounts struct{ unary, streams map[string]int64 }

func newRPCCounter() *rpcCounter {
	return &rpcCounter{unary: map[string]int64{}, streams: map[string]int64{}}
}

func (rc *rpcCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			rc.mu.Lock()
			rc.unary[method]++
			rc.mu.Unlock()
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			rc.mu.Lock()
			rc.streams[method]++
			rc.mu.Unlock()
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

func (rc *rpcCounter) snapshot() rpcCounts {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rpcCounts{unary: copyCounts(rc.unary), streams: copyCounts(rc.streams)}
}

func copyCounts(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// since is the count of each method between two snapshots.
func (after rpcCounts) since(before rpcCounts) rpcCounts {
	d := func(a, b map[string]int64) map[string]int64 {
		out := map[string]int64{}
		for k, v := range a {
			if v -= b[k]; v != 0 {
				out[k] = v
			}
		}
		return out
	}
	return rpcCounts{unary: d(after.unary, before.unary), streams: d(after.streams, before.streams)}
}

func (c rpcCounts) totalUnary() int64 {
	var n int64
	for _, v := range c.unary {
		n += v
	}
	return n
}

func (c rpcCounts) String() string {
	var parts []string
	for _, m := range []map[string]int64{c.unary, c.streams} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k[strings.LastIndex(k, "/")+1:], m[k]))
		}
		parts = append(parts, "|")
	}
	return strings.Join(parts[:len(parts)-1], " ")
}

// newBenchClient connects to srv with its own connection, counting RPCs in rc.
func newBenchClient(b testing.TB, srv *embedtest.Server, rc *rpcCounter) *clientv3.Client {
	b.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints,
		DialTimeout: 5 * time.Second,
		DialOptions: rc.dialOptions(),
		Logger:      zap.NewNop(),
	})
	if err != nil {
		b.Fatalf("client: %v", err)
	}
	return srv.Confine(c)
}

var benchFsync = []struct {
	name string
	opts []embedtest.Option
}{
	{"fsync=on", nil},
	{"fsync=off", []embedtest.Option{embedtest.NoFsync()}},
}

// BenchmarkLockUncontended measures Lock+Unlock of a free lock by one
// session (ns/op), and the unary RPCs and watch streams each pair costs.
// BenchmarkLockUncontended alternates one Lock+Unlock of concord's Mutex
// and one of etcd's, each on its own connection and session, so drift in
// the machine or the server (its WAL, its index) falls on both alike.
// Reported: each one's ns per Lock+Unlock, their ratio, and concord's
// unary requests and watch streams per Lock+Unlock.
func BenchmarkLockUncontended(b *testing.B) {
	for _, fs := range benchFsync {
		b.Run(fs.name, func(b *testing.B) {
			srv := embedtest.Start(b, fs.opts...)
			benchUncontended(b, srv)
		})
	}
}

func benchUncontended(b *testing.B, srv *embedtest.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	type side struct {
		l     benchLocker
		rc    *rpcCounter
		spent time.Duration
	}
	var sides []*side
	for _, impl := range benchImpls {
		rc := newRPCCounter()
		c := newBenchClient(b, srv, rc)
		defer func() { _ = c.Close() }()
		l, closeSession, err := impl.open(ctx, c, benchLockName(b)+"-"+impl.name)
		if err != nil {
			b.Fatalf("open %s: %v", impl.name, err)
		}
		defer func() {
			if err := closeSession(); err != nil {
				b.Errorf("close %s session: %v", impl.name, err)
			}
		}()
		sides = append(sides, &side{l: l, rc: rc})
	}
	lockUnlock := func(sd *side) {
		start := time.Now()
		if err := sd.l.Lock(ctx); err != nil {
			b.Fatalf("Lock: %v", err)
		}
		if err := sd.l.Unlock(ctx); err != nil {
			b.Fatalf("Unlock: %v", err)
		}
		sd.spent += time.Since(start)
	}
	for _, sd := range sides {
		lockUnlock(sd) // warm up: the first use may open streams
		sd.spent = 0
	}
	concord, etcd := sides[0], sides[1]
	before := concord.rc.snapshot()
	b.ResetTimer()
	for i := range b.N {
		// Alternate which goes first, too.
		if i%2 == 0 {
			lockUnlock(concord)
			lockUnlock(etcd)
		} else {
			lockUnlock(etcd)
			lockUnlock(concord)
		}
	}
	b.StopTimer()
	d := concord.rc.snapshot().since(before)
	b.ReportMetric(float64(concord.spent.Nanoseconds())/float64(b.N), "concord-ns/op")
	b.ReportMetric(float64(etcd.spent.Nanoseconds())/float64(b.N), "etcd-ns/op")
	b.ReportMetric(float64(concord.spent)/float64(etcd.spent), "ratio")
	b.ReportMetric(float64(d.totalUnary())/float64(b.N), "unary/op")
	b.ReportMetric(float64(d.streams[watchMethod])/float64(b.N), "streams/op")
	if testing.Verbose() {
		b.Logf("N=%d concord rpcs: %v", b.N, d)
	}
}

// BenchmarkLockContended measures handoffs of one lock among C contenders,
// each with its own connection and session, each looping
// Lock -> tiny critical section -> Unlock until b.N handoffs have happened.
// A handoff is the next acquisition after the previous one; its latency runs
// from the previous holder's Unlock call to the next holder's Lock return.
// Reported: handoffs/s; handoff latency p50/p99/max; the Unlock call's own
// p50 (unlock-p50-ms); and per handoff the unary RPCs and the watch streams
// opened by all contenders together (lease keepalive streams not counted).
// Every run also checks that holds never overlap and, for concord, that
// fencing tokens strictly increase.
func BenchmarkLockContended(b *testing.B) {
	for _, fs := range benchFsync {
		for _, where := range embedtest.BenchServers() {
			b.Run(fs.name+"/"+where.Name, func(b *testing.B) {
				srv := embedtest.Start(b, append(where.Opts, fs.opts...)...)
				for _, impl := range benchImpls {
					for _, n := range []int{2, 8, 32} {
						b.Run(fmt.Sprintf("%s/contenders=%d", impl.name, n), func(b *testing.B) {
							benchContended(b, srv, impl, n)
						})
					}
				}
				b.Run("floor", func(b *testing.B) { benchFloor(b, srv) })
				b.Run("floor2", func(b *testing.B) { benchFloorWrites(b, srv, 2) })
			})
		}
	}
}

// benchFloor measures the least any lock on etcd can do per handoff, however
// many contend: handoffs are serial, and each needs the release written and
// its watch event delivered to the next holder. Two clients pass a turn back
// and forth, each putting a key the other watches (no reads, no lease, no
// fencing). Reported: handoffs/s.
func benchFloor(b *testing.B, srv *embedtest.Server) { benchFloorWrites(b, srv, 1) }

// benchFloorWrites is embedtest.BenchFloorCycle with writes puts per turn
// and no reads: floor2 (writes=2) is the bound for any lock whose waiters
// write to join.
func benchFloorWrites(b *testing.B, srv *embedtest.Server, writes int) {
	embedtest.BenchFloorCycle(b, srv, writes, 0, "handoff")
}

type benchContender struct {
	c            *clientv3.Client
	l            benchLocker
	closeSession func() error
}

func benchContended(b *testing.B, srv *embedtest.Server, impl benchImpl, contenders int) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	rc := newRPCCounter()
	name := benchLockName(b)
	var cs []benchContender
	defer func() {
		for _, c := range cs {
			if c.closeSession != nil {
				if err := c.closeSession(); err != nil {
					b.Errorf("close session: %v", err)
				}
			}
			_ = c.c.Close()
		}
	}()
	for range contenders {
		c := newBenchClient(b, srv, rc)
		cs = append(cs, benchContender{c: c})
		l, closeSession, err := impl.open(ctx, c, name)
		if err != nil {
			b.Fatalf("open: %v", err)
		}
		cs[len(cs)-1].l, cs[len(cs)-1].closeSession = l, closeSession
	}

	n := int64(b.N)
	var (
		acquired   atomic.Int64 // acquisitions so far
		inside     atomic.Int32 // holders now, by this process's count
		lastUnlock atomic.Int64 // since base, when the last holder called Unlock
		lastToken  atomic.Int64 // concord's fencing token of the last hold

		// Written by the holders of acquisitions 1 and n+1, read after wg.Wait.
		startAt, endAt time.Duration
		before, after  rpcCounts
		lat            = make([]time.Duration, n) // lat[i-2]: acquisition i's handoff
		unlockDur      = make([]time.Duration, n) // unlockDur[i-1]: acquisition i's Unlock call

		errMu sync.Mutex
		errs  []error
	)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
		stop()
	}
	done := make(chan struct{})
	begin := make(chan struct{})
	base := time.Now()
	loop := func(l benchLocker) {
		<-begin
		for {
			if err := l.Lock(runCtx); err != nil {
				if runCtx.Err() == nil {
					fail(fmt.Errorf("Lock after %d acquisitions: %w", acquired.Load(), err))
				}
				return
			}
			got := time.Since(base)
			i := acquired.Add(1)
			if k := inside.Add(1); k != 1 {
				fail(fmt.Errorf("acquisition %d: %d holders at once", i, k))
			}
			if t, ok := l.(interface{ Token() concurrency.Token }); ok {
				tok := int64(t.Token())
				if prev := lastToken.Swap(tok); tok <= prev {
					fail(fmt.Errorf("acquisition %d: token %d after %d", i, tok, prev))
				}
			}
			switch {
			case i == 1:
				startAt, before = got, rc.snapshot()
			case i <= n+1:
				lat[i-2] = got - time.Duration(lastUnlock.Load())
			}
			if i == n+1 {
				endAt, after = got, rc.snapshot()
				close(done)
			}
			inside.Add(-1)
			unlockAt := time.Since(base)
			lastUnlock.Store(int64(unlockAt))
			// Unlock with ctx, not runCtx: a holder past the end still
			// releases cleanly after the waiters are stopped.
			if err := l.Unlock(ctx); err != nil {
				fail(fmt.Errorf("Unlock of acquisition %d: %w", i, err))
				return
			}
			if i <= n {
				unlockDur[i-1] = time.Since(base) - unlockAt
			}
			if i > n {
				return
			}
		}
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(c.l)
		}()
	}
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	close(begin)
	select {
	case <-done:
	case <-runCtx.Done():
	}
	b.StopTimer()
	stop() // the waiters give up
	wg.Wait()
	// From before the contenders' first Lock to after the last one gave
	// up: their joins and cancelled waits (one each) are counted too.
	srvStats := embedtest.BenchStats(b, srv).Sub(st0)
	if len(errs) > 0 {
		b.Fatalf("%s, %d contenders, N=%d: %v", impl.name, contenders, n, errors.Join(errs...))
	}
	if ctx.Err() != nil {
		b.Fatalf("timed out after %v with %d of %d handoffs", benchTimeout, acquired.Load()-1, n)
	}

	elapsed := endAt - startAt
	d := after.since(before)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "handoffs/s")
	b.ReportMetric(quantileMs(lat, 0.5), "p50-ms")
	b.ReportMetric(quantileMs(lat, 0.99), "p99-ms")
	b.ReportMetric(quantileMs(lat, 1), "max-ms")
	b.ReportMetric(quantileMs(unlockDur, 0.5), "unlock-p50-ms")
	b.ReportMetric(float64(d.totalUnary())/float64(n), "unary/handoff")
	b.ReportMetric(float64(d.streams[watchMethod])/float64(n), "streams/handoff")
	srvStats.Report(b, srv, int(n), "handoff")
	if testing.Verbose() {
		b.Logf("N=%d elapsed=%v unlock p99=%.2fms rpcs: %v", n, elapsed, quantileMs(unlockDur, 0.99), d)
	}
}

// quantileMs sorts ds and returns its q-quantile in milliseconds.
func quantileMs(ds []time.Duration, q float64) float64 {
	slices.Sort(ds)
	return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000
}
