package barrier_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/barrier"
	"github.com/concordkit/concord/embedtest"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// The wake-up benchmark holds a barrier, starts 100 waiters (10 clients, 10
// waiters each), waits until the server has created all their watches, then
// releases the barrier and measures, for each waiter, the time from the
// Release call to its Wait returning. It runs concord's Barrier and etcd's
// own recipe (client/v3/experimental/recipes Barrier) on the same server in
// the same run, first a separate etcd process (CONCORD_ETCD_BIN, as
// production runs it), then embedded; "busy" adds a writer putting an
// unrelated key every 2 ms, as other tenants of a cluster would (its puts
// are counted in the server's stats too, alike for every side):
//
//	go test -run '^$' -bench BenchmarkBarrierWake -benchtime 20x ./barrier
//
// Figures: p50 and p99 of the wake-up latency, in ms, and the server's own
// stats per wake (embedtest.ServerStats.Report: its CPU, unary requests,
// watch requests and responses, watch events), a wake being one whole
// round: the hold, 100 waiters waiting, the release and every waiter
// woken. floor is the least etcd work such a round could need
// (floorBarrier): the hold's put, one watch created per waiter from the
// hold's revision (no reads: the waiters are handed that revision in
// process), the release's delete, and its event to each waiter.

const (
	benchWaiters = 100
	benchClients = 10
)

type benchBarrier interface {
	hold(ctx context.Context) error
	release(ctx context.Context) error
	wait(ctx context.Context) error
}

type concordBarrier struct{ b *barrier.Barrier }

func (c concordBarrier) hold(ctx context.Context) error    { return c.b.Hold(ctx) }
func (c concordBarrier) release(ctx context.Context) error { return c.b.Release(ctx) }
func (c concordBarrier) wait(ctx context.Context) error    { return c.b.Wait(ctx) }

// etcdBarrier is etcd's recipe; it takes no context.
type etcdBarrier struct{ b *recipe.Barrier }

func (e etcdBarrier) hold(context.Context) error    { return e.b.Hold() }
func (e etcdBarrier) release(context.Context) error { return e.b.Release() }
func (e etcdBarrier) wait(context.Context) error    { return e.b.Wait() }

// floorBarrier is the floor: the holder puts the key and hands its
// revision to the waiters in process; a waiter watches the key from the
// next revision (one watch create, no read) until its deletion.
type floorBarrier struct {
	c   *clientv3.Client
	key string
	rev *atomic.Int64 // the hold's revision, shared by every floorBarrier of key
}

var floorRevs sync.Map // key -> *atomic.Int64

func openFloor(c *clientv3.Client, name string) benchBarrier {
	rev, _ := floorRevs.LoadOrStore(name, new(atomic.Int64))
	return floorBarrier{c: c, key: name + "/floor", rev: rev.(*atomic.Int64)}
}

func (f floorBarrier) hold(ctx context.Context) error {
	resp, err := f.c.Put(ctx, f.key, "")
	if err == nil {
		f.rev.Store(resp.Header.Revision)
	}
	return err
}

func (f floorBarrier) release(ctx context.Context) error {
	_, err := f.c.Delete(ctx, f.key)
	return err
}

func (f floorBarrier) wait(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := f.c.Watch(wctx, f.key, clientv3.WithRev(f.rev.Load()+1), clientv3.WithFilterPut())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) > 0 {
			return nil
		}
	}
	return ctx.Err()
}

var benchImpls = []struct {
	name string
	open func(c *clientv3.Client, name string) benchBarrier
}{
	{"concord", func(c *clientv3.Client, name string) benchBarrier {
		b, _ := barrier.New(c, name)
		return concordBarrier{b}
	}},
	{"etcd", func(c *clientv3.Client, name string) benchBarrier {
		return etcdBarrier{recipe.NewBarrier(c, name+"/.barrier")}
	}},
	{"floor", openFloor},
}

// createdCounter counts watch-created responses received by the clients it
// instruments: a waiter is waiting once its watch is created.
type createdCounter struct{ n atomic.Int64 }

type countingStream struct {
	grpc.ClientStream
	cc *createdCounter
}

func (s countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if wr, ok := m.(*pb.WatchResponse); ok && err == nil && wr.Created {
		s.cc.n.Add(1)
	}
	return err
}

func (cc *createdCounter) dialOption() grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, conn *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		st, err := streamer(ctx, desc, conn, method, opts...)
		if err != nil {
			return nil, err
		}
		return countingStream{st, cc}, nil
	})
}

func BenchmarkBarrierWake(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			for _, load := range []string{"quiet", "busy"} {
				for _, impl := range benchImpls {
					b.Run(impl.name+"/"+load, func(b *testing.B) {
						benchWake(b, srv, load == "busy", impl.open)
					})
				}
			}
		})
	}
}

func benchWake(b *testing.B, srv *embedtest.Server, busy bool, open func(*clientv3.Client, string) benchBarrier) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cc := &createdCounter{}
	var clients []*clientv3.Client
	for range benchClients {
		c, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints, Logger: zap.NewNop(), DialOptions: []grpc.DialOption{cc.dialOption()}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	if busy {
		bctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer stop()
		wg.Go(func() {
			t := time.NewTicker(2 * time.Millisecond)
			defer t.Stop()
			for bctx.Err() == nil {
				_, _ = srv.Client.Put(bctx, "bench/noise", "x")
				select {
				case <-t.C:
				case <-bctx.Done():
				}
			}
		})
	}
	var lat []time.Duration
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("bench/wake/%s/%d", b.Name(), i)
		holder := open(srv.Client, name)
		if err := holder.hold(ctx); err != nil {
			b.Fatal(err)
		}
		before := cc.n.Load()
		ends := make(chan time.Time, benchWaiters)
		errs := make(chan error, benchWaiters)
		var wg sync.WaitGroup
		for w := range benchWaiters {
			wb := open(clients[w%benchClients], name)
			wg.Go(func() {
				if err := wb.wait(ctx); err != nil {
					errs <- err
					return
				}
				ends <- time.Now()
			})
		}
		deadline := time.Now().Add(time.Minute)
		for cc.n.Load()-before < benchWaiters {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d waiters' watches were created", cc.n.Load()-before, benchWaiters)
			}
			time.Sleep(time.Millisecond) // polling a counter with a deadline
		}
		start := time.Now()
		if err := holder.release(ctx); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		close(ends)
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		for e := range ends {
			lat = append(lat, e.Sub(start))
		}
	}
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	st.Report(b, srv, b.N, "wake")
}
