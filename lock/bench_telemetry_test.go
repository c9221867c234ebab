package lock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

// BenchmarkLockTelemetry measures what the OpenTelemetry instrumentation
// costs a lock handoff. Two groups of 8 contenders, each contender on its own
// connection and session, pass two locks on one server (fsync off, so the
// lock's own work is as large a share as it gets): one group with the
// default providers (no-op: no SDK installed), the other with the SDK's
// meter provider (a manual reader) and tracer provider (every span
// sampled). The groups take turns in blocks of 50 handoffs, so drift in the
// machine or the server falls on both alike. Reported: each group's
// handoffs/s and sdk/noop, the SDK group's throughput relative to the no-op
// group's.
//
//	go test -run '^$' -bench BenchmarkLockTelemetry -benchtime 2000x -count 3 ./lock
func BenchmarkLockTelemetry(b *testing.B) {
	srv := embedtest.Start(b, embedtest.NoFsync())
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	}()
	noop := newHandoffGroup(ctx, b, srv, benchLockName(b)+"-noop", nil, nil)
	sdk := newHandoffGroup(ctx, b, srv, benchLockName(b)+"-sdk", mp, tp)
	const block = 50
	b.ResetTimer()
	for noop.n < b.N || sdk.n < b.N {
		for _, g := range []*handoffGroup{noop, sdk} {
			if g.n < b.N {
				if err := g.run(ctx, min(block, b.N-g.n)); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.StopTimer()
	noopRate := float64(noop.n) / noop.spent.Seconds()
	sdkRate := float64(sdk.n) / sdk.spent.Seconds()
	b.ReportMetric(noopRate, "noop-handoffs/s")
	b.ReportMetric(sdkRate, "sdk-handoffs/s")
	b.ReportMetric(sdkRate/noopRate, "sdk/noop")
}

// handoffGroup is contenders passing one lock, timed while they run.
type handoffGroup struct {
	ms    []*lock.Mutex
	n     int
	spent time.Duration
}

func newHandoffGroup(ctx context.Context, b *testing.B, srv *embedtest.Server, name string, mp metric.MeterProvider, tp trace.TracerProvider) *handoffGroup {
	g := &handoffGroup{}
	for range 8 {
		c := newBenchClient(b, srv, newRPCCounter())
		b.Cleanup(func() { _ = c.Close() })
		s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(benchTTL),
			concurrency.WithMeterProvider(mp), concurrency.WithTracerProvider(tp))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close(context.Background()) })
		m, err := lock.NewMutex(s, name)
		if err != nil {
			b.Fatal(err)
		}
		g.ms = append(g.ms, m)
	}
	if err := g.run(ctx, 2*len(g.ms)); err != nil { // warm up: streams, connections
		b.Fatal(err)
	}
	g.n, g.spent = 0, 0
	return g
}

// run lets the contenders loop Lock -> Unlock until k handoffs are made.
func (g *handoffGroup) run(ctx context.Context, k int) error {
	var made atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, len(g.ms))
	start := time.Now()
	for _, m := range g.ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for made.Load() < int64(k) {
				if err := m.Lock(ctx); err != nil {
					errc <- err
					return
				}
				made.Add(1)
				if err := m.Unlock(ctx); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	g.spent += time.Since(start)
	g.n += int(made.Load())
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
