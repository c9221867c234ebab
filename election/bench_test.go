package election_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdconc "go.etcd.io/etcd/client/v3/concurrency"
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

func newCandidates(b *testing.B, srv *embedtest.Server, impl, name string) (candidate, candidate) {
	var out []candidate
	for range 2 {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
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
	return out[0], out[1]
}

// BenchmarkFailover measures a graceful handover: the leader resigns and the
// time until the waiting candidate's Campaign returns. "waited": the
// candidate has waited 150 ms; "fresh": the leader resigns as soon as the
// candidate's key exists.
//
//	go test -run '^$' -bench BenchmarkFailover -benchtime 100x ./election
func BenchmarkFailover(b *testing.B) {
	srv := embedtest.Start(b)
	for _, impl := range []string{"concord", "etcd"} {
		for _, mode := range []string{"waited", "fresh"} {
			b.Run(impl+"/"+mode, func(b *testing.B) {
				name := fmt.Sprintf("bench-%s-%s", impl, mode)
				prefix := name + "/"
				a, c := newCandidates(b, srv, impl, name)
				ctx := context.Background()
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for range b.N {
					if err := a.campaign(ctx, "a"); err != nil {
						b.Fatal(err)
					}
					got := make(chan error, 1)
					go func() { got <- c.campaign(ctx, "c") }()
					waitKeys(b, srv.Client, prefix, 2)
					if mode == "waited" {
						time.Sleep(150 * time.Millisecond)
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
				reportLatency(b, lat)
			})
		}
	}
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
