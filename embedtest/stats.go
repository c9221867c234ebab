package embedtest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/internal/srvstats"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ServerStats are a server's own counters, read from its /metrics: what it
// spent and what it was asked to do. Subtract two snapshots (Sub) to get
// what happened between them.
type ServerStats struct {
	// CPU is the server process's CPU time (process_cpu_seconds_total, in
	// 10 ms steps). For an embedded member it is the whole test process's,
	// clients included; run the server OwnProcess to tell them apart.
	CPU time.Duration
	// Unary is how many unary gRPC requests the server began (Range, Txn,
	// Put, LeaseGrant, ...; keepalives and watches are streams).
	Unary int64
	// WatchRequests are the messages received on Watch streams: watch
	// creates, cancels and progress requests.
	WatchRequests int64
	// WatchResponses are the messages sent on Watch streams: created and
	// cancelled confirmations, and responses carrying events.
	WatchResponses int64
	// Events are the key-value events the server's watchers sent
	// (etcd_debugging_mvcc_events_total).
	Events int64
	// KeepAlives are the messages received on LeaseKeepAlive streams.
	KeepAlives int64
	// Client is this (the test's) process's CPU time (ownCPU), read with
	// the server's counters.
	Client time.Duration
}

// Sub is s minus o.
func (s ServerStats) Sub(o ServerStats) ServerStats {
	return ServerStats{CPU: s.CPU - o.CPU, Unary: s.Unary - o.Unary, WatchRequests: s.WatchRequests - o.WatchRequests,
		WatchResponses: s.WatchResponses - o.WatchResponses, Events: s.Events - o.Events, KeepAlives: s.KeepAlives - o.KeepAlives, Client: s.Client - o.Client}
}

// Report reports s per operation on b, for ops operations: the server's CPU
// (server-cpu-ms/op, with the test process's as client-cpu-ms/op, when it
// runs in its own process; proc-cpu-ms/op when embedded, where it counts
// the clients too), and its unary requests, watch requests,
// watch responses and watch events per operation.
func (s ServerStats) Report(b *testing.B, srv *Server, ops int, op string) {
	if ops <= 0 {
		return
	}
	n := float64(ops)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / n }
	switch {
	case srv.proc != nil:
		b.ReportMetric(ms(s.CPU), "server-cpu-ms/"+op)
		b.ReportMetric(ms(s.Client), "client-cpu-ms/"+op)
	case !External():
		b.ReportMetric(ms(s.CPU), "proc-cpu-ms/"+op)
	}
	b.ReportMetric(float64(s.Unary)/n, "srv-unary/"+op)
	b.ReportMetric(float64(s.WatchRequests)/n, "srv-watch-reqs/"+op)
	b.ReportMetric(float64(s.WatchResponses)/n, "srv-watch-resps/"+op)
	b.ReportMetric(float64(s.Events)/n, "srv-events/"+op)
}

// Stats reads the server's counters from its first endpoint's /metrics.
// On an external cluster that is one member's share only.
func (s *Server) Stats(ctx context.Context) (ServerStats, error) {
	st, err := readServerStats(ctx, s.Endpoints[0])
	st.Client = ownCPU()
	return st, err
}

// metricsClient reads /metrics without keeping connections open: a test
// binary run against an external cluster would otherwise end with the
// connections' goroutines still running (goleak).
var metricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// readServerStats reads the counters of the etcd member serving endpoint
// (http://host:port; etcd serves /metrics on its client URLs).
func readServerStats(ctx context.Context, endpoint string) (ServerStats, error) {
	st, err := srvstats.Read(ctx, metricsClient, endpoint)
	if err != nil {
		return ServerStats{}, fmt.Errorf("embedtest: %w", err)
	}
	return ServerStats{CPU: st.CPU, Unary: st.Unary, WatchRequests: st.WatchRequests,
		WatchResponses: st.WatchResponses, Events: st.Events, KeepAlives: st.KeepAlives}, nil
}

// BenchServer is one place a benchmark runs etcd: Name for b.Run
// ("server=process", "server=embedded" or "server=external"), Opts for
// Start.
type BenchServer struct {
	Name string
	Opts []Option
}

// BenchServers are where benchmarks run etcd: first a server process of its
// own (the binary named by BinaryEnv, as production runs it) when one is
// given, then embedded in the benchmark's process; on an external cluster
// (ExternalEnv) only that cluster, as "server=external".
func BenchServers() []BenchServer {
	if External() {
		return []BenchServer{{Name: "server=external"}}
	}
	out := []BenchServer{{Name: "server=embedded"}}
	if bin := Binary(); bin != "" {
		out = append([]BenchServer{{Name: "server=process", Opts: []Option{OwnProcess(bin)}}}, out...)
	}
	return out
}

// BenchStats reads srv's counters for a benchmark, failing it if they
// cannot be read (on an external cluster they are one member's and not
// required).
func BenchStats(b testing.TB, srv *Server) ServerStats {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := srv.Stats(ctx)
	if err != nil && !External() {
		b.Fatal(err)
	}
	return st
}

var floorRun atomic.Int64

// BenchFloor runs b.N rounds of the least etcd work a handoff can need: one
// put, and its watch event delivered to each of watchers watchers (each on
// its own connection). It reports the server's stats per op (Report) and
// returns each round's latency, from before the put until the last watcher
// has the event, for the caller to report its own way.
func BenchFloor(b *testing.B, srv *Server, watchers int, op string) []time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	key := fmt.Sprintf("bench-floor/%d", floorRun.Add(1))
	pubC, err := srv.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = pubC.Close() }()
	var wchs []clientv3.WatchChan
	for range watchers {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		wch := c.Watch(ctx, key, clientv3.WithCreatedNotify())
		if wr := <-wch; !wr.Created {
			b.Fatalf("watch not created: %v", wr.Err())
		}
		wchs = append(wchs, wch)
	}
	lat := make([]time.Duration, 0, b.N)
	st0 := BenchStats(b, srv)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := pubC.Put(ctx, key, strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
		for _, wch := range wchs {
			for got := false; !got; {
				wr, ok := <-wch
				if !ok || wr.Err() != nil {
					b.Fatalf("watch ended: %v", wr.Err())
				}
				got = len(wr.Events) > 0
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, op)
	return lat
}

// BenchFloorCycle is the floor of a handoff whose contenders also write and
// read, as a lock's or semaphore's do: two clients pass a turn back and
// forth, each turn a put of the key the other side watches (the handoff),
// then writes-1 puts of the side's own key (a join after the release: off
// the handoff's path, but through the server's one log) and reads small
// reads of that key (a waiter's read of the line). No leases, Txns or
// fencing. It reports handoffs/s, the handoff's p50 and p99 (from before
// the handoff's put until the other side has its event: the least latency
// such a loop can have) and the server's stats per op (Report).
func BenchFloorCycle(b *testing.B, srv *Server, writes, reads int, op string) {
	BenchFloorCycleOf(b, srv, FloorCycle{Writes: writes, Reads: reads}, op)
}

// FloorCycle is what each turn of BenchFloorCycleOf does.
type FloorCycle struct {
	Writes, Reads int // as BenchFloorCycle's
	// Watchers hear each handoff's put besides the other side (each on a
	// client of its own), as a semaphore's waiters each hear each release
	// to count the holders ahead of them.
	Watchers int
	// Rewatch opens a watch and closes it again after the turn's writes,
	// as a contender that joins the line starts watching it (and stops
	// once granted) instead of hearing every release while it holds.
	Rewatch bool
}

// BenchFloorCycleOf is BenchFloorCycle with what fc adds to each turn.
func BenchFloorCycleOf(b *testing.B, srv *Server, fc FloorCycle, op string) {
	writes, reads := fc.Writes, fc.Reads
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	name := fmt.Sprintf("bench-floor-cycle/%d", floorRun.Add(1))
	var cs [2]*clientv3.Client
	var wchs [2]clientv3.WatchChan
	for i := range 2 {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		cs[i] = c
		wchs[i] = c.Watch(ctx, fmt.Sprintf("%s/%d", name, i), clientv3.WithCreatedNotify())
		if wr := <-wchs[i]; !wr.Created {
			b.Fatalf("watch not created: %v", wr.Err())
		}
	}
	var drained sync.WaitGroup
	defer drained.Wait()
	defer cancel()
	for range fc.Watchers {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		// Both sides' handoff keys, not their own keys' puts.
		wch := c.Watch(ctx, name+"/0", clientv3.WithRange(name+"/2"), clientv3.WithCreatedNotify())
		if wr := <-wch; !wr.Created {
			b.Fatalf("watch not created: %v", wr.Err())
		}
		drained.Go(func() {
			for range wch {
			}
		})
	}
	n := b.N
	errs := make(chan error, 2)
	handed := make([]atomic.Int64, n) // when each turn's handoff put began (UnixNano)
	var lats [2][]time.Duration
	st0 := BenchStats(b, srv)
	b.ResetTimer()
	start := time.Now()
	for i := range 2 {
		go func() {
			own := fmt.Sprintf("%s/join-%d", name, i)
			seen := 0 // turns handed to this side so far
			for turn := i; turn < n; turn += 2 {
				for seen < turn/2+turn%2 && turn > 0 {
					wr, ok := <-wchs[i]
					if !ok || wr.Err() != nil {
						errs <- fmt.Errorf("watch ended: %v", wr.Err())
						return
					}
					seen += len(wr.Events)
				}
				if turn > 0 {
					lats[i] = append(lats[i], time.Since(time.Unix(0, handed[turn-1].Load())))
				}
				handed[turn].Store(time.Now().UnixNano())
				if _, err := cs[i].Put(ctx, fmt.Sprintf("%s/%d", name, 1-i), "x"); err != nil {
					errs <- err
					return
				}
				for range writes - 1 {
					if _, err := cs[i].Put(ctx, own, "x"); err != nil {
						errs <- err
						return
					}
				}
				for range reads {
					if _, err := cs[i].Get(ctx, own, clientv3.WithKeysOnly()); err != nil {
						errs <- err
						return
					}
				}
				if fc.Rewatch {
					wctx, stop := context.WithCancel(ctx)
					wr := <-cs[i].Watch(wctx, own, clientv3.WithCreatedNotify())
					stop()
					if !wr.Created {
						errs <- fmt.Errorf("watch not created: %v", wr.Err())
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "handoffs/s")
	if lat := append(lats[0], lats[1]...); len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
	}
	BenchStats(b, srv).Sub(st0).Report(b, srv, n, op)
}
