package election_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdconc "go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// candidate abstracts concord's and etcd's elections for the benchmarks.
type candidate interface {
	campaign(ctx context.Context, v string) error
	resign(ctx context.Context) error
}

type concordCandidate struct {
	e    *election.Election
	term *election.Leadership
}

func (c *concordCandidate) campaign(ctx context.Context, v string) (err error) {
	c.term, err = c.e.Campaign(ctx, v)
	return err
}
func (c *concordCandidate) resign(ctx context.Context) error { return c.term.Resign(ctx) }

type etcdCandidate struct{ e *etcdconc.Election }

func (c *etcdCandidate) campaign(ctx context.Context, v string) error { return c.e.Campaign(ctx, v) }
func (c *etcdCandidate) resign(ctx context.Context) error             { return c.e.Resign(ctx) }

// newCandidates makes two candidates, each on its own connection, and for
// each a channel that gets a value (if empty) whenever one of its Txns is
// answered: a Campaign's first Txn is its join (concord's and etcd's
// alike), so after it the candidate is in line, and nobody has to ask the
// server.
func newCandidates(b *testing.B, srv *embedtest.Server, impl, name string) (candidate, candidate, [2]chan struct{}) {
	var out []candidate
	var txns [2]chan struct{}
	for i := range 2 {
		txns[i] = make(chan struct{}, 1)
		c := txnClient(b, srv, txns[i])
		switch impl {
		case "concord":
			s, err := concurrency.NewSession(context.Background(), c, concurrency.WithTTL(10*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close(context.Background()) })
			e, err := election.New(s, name)
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, &concordCandidate{e: e})
		default:
			s, err := etcdconc.NewSession(c, etcdconc.WithTTL(10))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			out = append(out, &etcdCandidate{e: etcdconc.NewElection(s, name)})
		}
	}
	return out[0], out[1], txns
}

// txnClient is a client on its own connection that signals txn (without
// blocking) whenever one of its Txns is answered without error.
func txnClient(b *testing.B, srv *embedtest.Server, txn chan struct{}) *clientv3.Client {
	b.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
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

// BenchmarkFailover measures a graceful handover: the leader resigns and the
// time until the waiting candidate's Campaign returns. "waited": the
// candidate has waited 150 ms; "fresh": the leader resigns as soon as the
// candidate has joined (its join Txn answered). Besides p50/p99, the
// server's stats per failover (embedtest.ServerStats.Report) cover the
// whole cycle: two campaigns (two joins), the handover, and the new
// leader's resign, so four writes where the floor has one; "waited" also
// counts 150 ms of the server's idle work per failover. floor is the same
// cycle with nothing but its writes and the one watch event the handover
// needs (benchFloorCycle), the least that cycle can cost the server. Each
// runs against a separate etcd process first (CONCORD_ETCD_BIN), then
// embedded.
//
//	go test -run '^$' -bench BenchmarkFailover -benchtime 100x ./election
func BenchmarkFailover(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			for _, impl := range []string{"concord", "etcd"} {
				for _, mode := range []string{"waited", "fresh"} {
					b.Run(impl+"/"+mode, func(b *testing.B) { benchFailover(b, srv, impl, mode == "waited") })
				}
			}
			b.Run("floor", func(b *testing.B) { benchFloorCycle(b, srv) })
		})
	}
}

var benchRun atomic.Int64

func benchFailover(b *testing.B, srv *embedtest.Server, impl string, waited bool) {
	name := fmt.Sprintf("bench-%s-%d", impl, benchRun.Add(1))
	a, c, txns := newCandidates(b, srv, impl, name)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for range b.N {
		if err := a.campaign(ctx, "a"); err != nil {
			b.Fatal(err)
		}
		select {
		case <-txns[1]: // c's last resign, if it was a Txn
		default:
		}
		got := make(chan error, 1)
		go func() { got <- c.campaign(ctx, "c") }()
		select {
		case <-txns[1]: // c joined, behind a
		case err := <-got:
			b.Fatalf("campaign returned before the leader resigned: %v", err)
		case <-time.After(10 * time.Second):
			b.Fatal("the candidate did not join within 10s")
		}
		if waited {
			time.Sleep(150 * time.Millisecond) // the case measured, not a wait for a condition
		}
		start := time.Now()
		if err := a.resign(ctx); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		if err := c.resign(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	reportLatency(b, lat)
	st.Report(b, srv, b.N, "failover")
}

// benchFloorCycle is BenchmarkFailover's cycle reduced to the writes it
// cannot do without and the handover's watch event: the leader and the
// candidate each put a key (two joins), the leader deletes its own (the
// handover), the candidate's watch on it delivers the deletion, and the
// candidate deletes its key (the new leader's leave). No reads, leases or
// conditions. The latency is the handover's, from the delete to the event.
func benchFloorCycle(b *testing.B, srv *embedtest.Server) {
	ctx := context.Background()
	pfx := fmt.Sprintf("bench-floor-%d/", benchRun.Add(1))
	var cs [2]*clientv3.Client
	for i := range cs {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		cs[i] = c
	}
	leader, cand := pfx+"a", pfx+"c"
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cs[1].Watch(wctx, leader, clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	if wr := <-wch; !wr.Created {
		b.Fatalf("watch not created: %v", wr.Err())
	}
	lat := make([]time.Duration, 0, b.N)
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for range b.N {
		if _, err := cs[0].Put(ctx, leader, "a"); err != nil {
			b.Fatal(err)
		}
		if _, err := cs[1].Put(ctx, cand, "c"); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := cs[0].Delete(ctx, leader); err != nil {
			b.Fatal(err)
		}
		if wr, ok := <-wch; !ok || wr.Err() != nil || len(wr.Events) == 0 {
			b.Fatalf("watch ended: %v", wr.Err())
		}
		lat = append(lat, time.Since(start))
		if _, err := cs[1].Delete(ctx, cand); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, "failover")
	reportLatency(b, lat)
}

// waitKeys polls until n keys exist under prefix.
func waitKeys(b *testing.B, c *clientv3.Client, prefix string, n int64) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if resp.Count >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d keys under %s after 10s, want %d", resp.Count, prefix, n)
		}
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

// BenchmarkCrashFailover measures the time from the leader's client being
// cut off (its connection blackholed) to the standby's election, against a
// 2 s TTL: the target is at most TTL + 1 s.
//
//	go test -run '^$' -bench BenchmarkCrashFailover -benchtime 3x ./election
func BenchmarkCrashFailover(b *testing.B) {
	srv := embedtest.Start(b, embedtest.FastTicks())
	const ttl = 2 * time.Second
	var lat []time.Duration
	for i := range b.N {
		p := embedtest.NewProxy(b, srv.Endpoints[0])
		cut, err := p.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("crash-%d", i)
		ctx := context.Background()
		sa, err := concurrency.NewSession(ctx, cut, concurrency.WithTTL(ttl))
		if err != nil {
			b.Fatal(err)
		}
		sb, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(ttl))
		if err != nil {
			b.Fatal(err)
		}
		ea, _ := election.New(sa, name)
		eb, _ := election.New(sb, name)
		if _, err := ea.Campaign(ctx, "a"); err != nil {
			b.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			l, err := eb.Campaign(ctx, "b")
			if err == nil {
				err = l.Resign(ctx)
			}
			got <- err
		}()
		waitKeys(b, srv.Client, name+"/", 2)
		start := time.Now()
		p.Blackhole()
		if err := <-got; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		p.Unblackhole()
		_ = sa.Close(ctx)
		_ = sb.Close(ctx)
		_ = p.Close()
	}
	reportLatency(b, lat)
}
