package semaphore_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// rpcCounts counts a client's unary requests and the watch responses it
// receives.
type rpcCounts struct {
	unary, watchResps atomic.Int64
}

type countingStream struct {
	grpc.ClientStream
	n *atomic.Int64
}

func (s countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.n.Add(1)
	}
	return err
}

func instrumentedClient(t testing.TB, srv *embedtest.Server, rc *rpcCounts) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				rc.unary.Add(1)
				return invoker(ctx, method, req, reply, cc, opts...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				cs, err := streamer(ctx, desc, cc, method, opts...)
				if err != nil || method != "/etcdserverpb.Watch/Watch" {
					return cs, err
				}
				return countingStream{cs, &rc.watchResps}, nil
			}),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return srv.Confine(c)
}

// waitCount polls until n keys exist under prefix.
func waitCount(t testing.TB, c *clientv3.Client, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(testCtx(t), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == int64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys under %s after 20s, want %d", resp.Count, prefix, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quiet waits until n has not moved for 300ms, and returns its value.
func quiet(t testing.TB, n *atomic.Int64) int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last, since := n.Load(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if v := n.Load(); v != last {
			last, since = v, time.Now()
		} else if time.Since(since) >= 300*time.Millisecond {
			return v
		}
	}
	t.Fatal("requests did not settle within 20s")
	return 0
}

// With 1,000 waiters in line (300 under -race), a release costs O(1) requests in all (the
// releaser's delete, the admitted waiter's re-read and grant), however many
// wait: waiters that stay waiting make none. Nor are they told of it: only
// the waiters within the limit of the deleted key watch it, so the watch
// responses per release do not grow with the line either.
func TestThousandWaitersNoHerd(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const limit, clients, releases = 4, 4, 5
	waiters := 1000
	if raceOn {
		// Every Join's put is filtered by every waiter's watch in the
		// (instrumented) server: setting up 1,000 takes ~15s under -race.
		waiters = 300
	}
	var rc rpcCounts
	admin := newSem(t, newSession(t, instrumentedClient(t, srv, &rc), 10*time.Second), "fleet", limit, semaphore.WithFollowLimit())
	var held []*semaphore.Permit
	for range limit {
		held = append(held, mustAcquire(t, ctx, admin))
	}
	grants := make(chan *semaphore.Permit, waiters)
	var sessions []*concurrency.Session
	var sems []*semaphore.Semaphore
	for range clients {
		s := newSession(t, instrumentedClient(t, srv, &rc), 10*time.Second)
		sessions = append(sessions, s)
		sems = append(sems, newSem(t, s, "fleet", limit, semaphore.WithFollowLimit()))
	}
	// Waiters still waiting when the test ends (or fails) are cancelled
	// and waited for, so none reports after the test is over.
	actx, cancelAcquires := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelAcquires(); wg.Wait() }()
	start := time.Now()
	// Join in batches: each Join reads the line, so 1,000 at once would
	// queue past etcd's request timeout under the race detector.
	const batch = 50
	for i := 0; i < waiters; i += batch {
		for j := range batch {
			sem := sems[(i+j)%len(sems)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				if p, err := sem.Acquire(actx); err == nil {
					grants <- p
				} else if actx.Err() == nil && !errors.Is(err, concurrency.ErrLeaseExpired) && !errors.Is(err, semaphore.ErrKeyDeleted) {
					t.Errorf("Acquire: %v", err)
				}
			}()
		}
		waitCount(t, srv.Client, "fleet/.sem/p/", limit+i+batch)
	}
	setup := quiet(t, &rc.unary)
	quiet(t, &rc.watchResps) // the waiters' watches, created one at a time per client
	t.Logf("%d waiters in line after %v, %d requests", waiters, time.Since(start).Round(time.Millisecond), setup)

	var perRelease []int64
	var lat []time.Duration
	var events int64
	for i := range releases {
		before, evBefore := rc.unary.Load(), rc.watchResps.Load()
		t0 := time.Now()
		if err := held[i].Release(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-grants:
			lat = append(lat, time.Since(t0))
			held = append(held, p)
		case <-time.After(5 * time.Second):
			t.Fatalf("release %d admitted nobody", i)
		}
		perRelease = append(perRelease, quiet(t, &rc.unary)-before)
		events += rc.watchResps.Load() - evBefore
		select {
		case p := <-grants:
			t.Fatalf("release %d admitted a second waiter (token %d)", i, p.Token())
		default:
		}
	}
	slices.Sort(lat)
	t.Logf("per release: unary requests %v; watch responses %d on average; handoff %v (median %v)",
		perRelease, events/releases, lat, lat[len(lat)/2])
	for i, n := range perRelease {
		if n > 8 {
			t.Errorf("release %d cost %d requests with %d waiters", i, n, waiters)
		}
	}
	// The events to waiters that joined near the front (fewer than 6
	// limits ahead: they watch the whole line), the admitted waiter's
	// cancelled watches, and the window moves of those just behind the
	// deleted key: bounded by the limit, not the line.
	if max := int64(8 * limit); events/releases > max {
		t.Errorf("%d watch responses per release with %d waiters, want at most %d", events/releases, waiters, max)
	}

	// A raise: every waiter re-reads the line once (documented cost).
	before := rc.unary.Load()
	t0 := time.Now()
	if err := admin.SetLimit(ctx, limit+2); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case p := <-grants:
			held = append(held, p)
		case <-time.After(10 * time.Second):
			t.Fatal("raise admitted nobody")
		}
	}
	t.Logf("raise by 2: two admitted in %v; %d requests in all", time.Since(t0).Round(time.Millisecond), quiet(t, &rc.unary)-before)

	// End the waits by revoking their leases: one revision each.
	for _, s := range sessions {
		if _, err := srv.Client.Revoke(ctx, s.Lease()); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for _, p := range held {
		_ = p.Release(ctx)
	}
}

// Contenders cycling Acquire and Release of a one-permit semaphore take up
// the watch on the key ahead their session kept from the last wait
// (session.WatchKey): no watch is created or cancelled per grant. A grant
// costs the Join, the Release and the grant's confirming read.
func TestCyclingWaitersKeepWatch(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const limit, contenders, grants = 1, 6, 300
	var rc rpcCounts
	var sems []*semaphore.Semaphore
	for range contenders {
		sems = append(sems, newSem(t, newSession(t, instrumentedClient(t, srv, &rc), 10*time.Second), "cycle", limit))
	}
	for _, sem := range sems { // each session has opened its streams
		if err := mustAcquire(t, ctx, sem).Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st0, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := rc.unary.Load()
	var granted atomic.Int64
	var wg sync.WaitGroup
	for _, sem := range sems {
		wg.Go(func() {
			for granted.Add(1) <= grants {
				p, err := sem.Acquire(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if err := p.Release(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unary := float64(rc.unary.Load()-before) / grants
	wreqs := float64(st.Sub(st0).WatchRequests) / grants
	t.Logf("per grant: %.2f unary requests, %.2f watch requests at the server", unary, wreqs)
	if wreqs > 0.5 {
		t.Errorf("%.2f watch requests per grant, want at most 0.5 (a kept watch taken up)", wreqs)
	}
	if unary > 3.3 {
		t.Errorf("%.2f unary requests per grant, want at most 3.3", unary)
	}
}

// A waiter far back in line (a window: see line's waitWindow) is granted
// on one read, made when a key of its window goes, which reads the stored
// limit along: a release then costs two requests in all, its delete and
// that read. Before, the waiter read the line when the key ahead of its
// window went and confirmed its grant with a second read: three.
func TestWindowedGrantIsOneRead(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const limit, waiters, clients = 2, 30, 3
	var rc rpcCounts
	admin := newSem(t, newSession(t, instrumentedClient(t, srv, &rc), 10*time.Second), "win", limit)
	held := []*semaphore.Permit{mustAcquire(t, ctx, admin), mustAcquire(t, ctx, admin)}
	var sems []*semaphore.Semaphore
	for range clients {
		c := instrumentedClient(t, srv, &rc)
		sems = append(sems, newSem(t, newSession(t, c, 10*time.Second), "win", limit))
	}
	actx, cancelAcquires := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelAcquires(); wg.Wait() }()
	grants := make(chan *semaphore.Permit, waiters)
	// One at a time, so the grants come in this order; from the 10th on,
	// each joins with at least 6 limits ahead: a window.
	for i := range waiters {
		sem := sems[i%clients]
		wg.Go(func() {
			if p, err := sem.Acquire(actx); err == nil {
				grants <- p
			} else if actx.Err() == nil {
				t.Errorf("Acquire: %v", err)
			}
		})
		waitCount(t, srv.Client, "win/.sem/p/", limit+i+1)
	}
	quiet(t, &rc.unary)
	var perRelease []int64
	for i := range waiters - 4 {
		before := rc.unary.Load()
		if err := held[i].Release(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-grants:
			held = append(held, p)
		case <-time.After(5 * time.Second):
			t.Fatalf("release %d admitted nobody", i)
		}
		perRelease = append(perRelease, quiet(t, &rc.unary)-before)
		select {
		case p := <-grants:
			t.Fatalf("release %d admitted a second waiter (token %d): more than %d held", i, p.Token(), limit)
		default:
		}
	}
	t.Logf("unary requests per release: %v", perRelease)
	// The waiters that joined with 12 or more ahead (the 10th on), and
	// their neighbours' reads: releases 12 to 25.
	var sum int64
	for _, n := range perRelease[12:] {
		sum += n
	}
	if avg := float64(sum) / float64(len(perRelease[12:])); avg > 2.25 {
		t.Errorf("%.2f requests per release to a waiter in a window, want at most 2.25 (a delete and one read)", avg)
	}
	for _, p := range held {
		_ = p.Release(ctx)
	}
}
