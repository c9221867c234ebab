package concurrency_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	etcdconc "go.etcd.io/etcd/client/v3/concurrency"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
)

// BenchmarkScaleSessions keeps many sessions alive in one process (one
// client, as a process has) and watches them idle: the keepalive load a
// fleet's worth of sessions puts on the server and the client, and whether
// that load costs any session its lease. A process that holds a session per
// lock, permit, queue consumer and registration can hold thousands; the
// question is whether the cost per session stays flat at that count, and
// whether renewals still arrive in time.
//
// For 100 and 10,000 sessions (TTL 10 s, fsync off), concord's Session and
// etcd's client/v3/concurrency Session (whose keepalives share the client's
// one lease stream) on the same server: the sessions are opened 32 at a time
// (sessions-opened/s), then left idle for window (20 s, or
// CONCORD_SCALE_WINDOW) per iteration. Reported per window: keepalive
// requests per second the server received (srv-keepalives/s; a session
// renews every TTL/3, so 0.3 per session per second is the expected rate),
// CPU per session per second (client-cpu-us/session/s when the server runs
// as its own process, proc-cpu-us/session/s embedded, where it includes
// the server's), goroutines and heap bytes per session, the server's watch
// streams and watchers, the sessions lost (lost-sessions, target 0) and,
// for concord, the renew margin (concord.session.renew_margin: time left
// before the renew deadline when a keepalive is answered) at p50 and p1.
//
//	CONCORD_ETCD_BIN=~/.cache/concord/etcd/3.7.3/etcd \
//	  go test -run '^$' -bench ScaleSessions -benchtime 1x ./concurrency
func BenchmarkScaleSessions(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
			for _, n := range []int{100, 10000} {
				for _, impl := range []string{"concord", "etcd"} {
					b.Run(fmt.Sprintf("%s/sessions=%d", impl, n), func(b *testing.B) {
						benchScaleSessions(b, srv, impl, n)
					})
				}
			}
		})
	}
}

// scaleWindow is how long each iteration watches the idle sessions.
func scaleWindow(b *testing.B) time.Duration {
	if v := os.Getenv("CONCORD_SCALE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("CONCORD_SCALE_WINDOW=%q: want a positive duration", v)
		}
		return d
	}
	return 20 * time.Second
}

// idleSession is what the benchmark needs of either implementation.
type idleSession struct {
	done  <-chan struct{}
	close func(ctx context.Context) error
}

func benchScaleSessions(b *testing.B, srv *embedtest.Server, impl string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, err := srv.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithView(sdkmetric.NewView(
		sdkmetric.Instrument{Name: "concord.session.renew_margin"},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: marginBounds()}})))
	defer mp.Shutdown(context.Background())

	open := func(ctx context.Context) (idleSession, error) {
		if impl == "etcd" {
			s, err := etcdconc.NewSession(c, etcdconc.WithTTL(10), etcdconc.WithContext(ctx))
			if err != nil {
				return idleSession{}, err
			}
			return idleSession{done: s.Done(), close: func(context.Context) error { return s.Close() }}, nil
		}
		s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second), concurrency.WithMeterProvider(mp))
		if err != nil {
			return idleSession{}, err
		}
		return idleSession{done: s.Done(), close: s.Close}, nil
	}

	g0, heap0 := runtime.NumGoroutine(), heapInUse()
	sessions := make([]idleSession, n)
	defer func() {
		closeAll(sessions)
	}()
	start := time.Now()
	if err := forEach(n, 32, func(i int) error {
		s, err := open(ctx)
		sessions[i] = s
		return err
	}); err != nil {
		b.Fatal(err)
	}
	opened := float64(n) / time.Since(start).Seconds()
	goroutines := float64(runtime.NumGoroutine()-g0) / float64(n)
	heap := float64(heapInUse()-heap0) / float64(n)

	window := scaleWindow(b)
	m0 := marginCounts(b, reader)
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for range b.N {
		t := time.NewTimer(window)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			b.Fatal(ctx.Err())
		}
	}
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	b.ReportMetric(opened, "sessions-opened/s") // after ResetTimer, which drops metrics
	b.ReportMetric(goroutines, "goroutines/session")
	b.ReportMetric(heap, "heap-B/session")
	secs := window.Seconds() * float64(b.N)
	perSession := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) / secs }
	b.ReportMetric(float64(st.KeepAlives)/secs, "srv-keepalives/s")
	switch where := b.Name(); {
	case strings.Contains(where, "server=process"):
		b.ReportMetric(perSession(st.Client), "client-cpu-us/session/s")
		b.ReportMetric(perSession(st.CPU), "server-cpu-us/session/s")
	case !embedtest.External():
		b.ReportMetric(perSession(st.CPU), "proc-cpu-us/session/s")
	}
	streams, watchers := watchGauges(b, srv)
	b.ReportMetric(streams, "srv-watch-streams")
	b.ReportMetric(watchers, "srv-watchers")
	lost := 0
	for _, s := range sessions {
		select {
		case <-s.done:
			lost++
		default:
		}
	}
	b.ReportMetric(float64(lost), "lost-sessions")
	if impl == "concord" {
		m := marginCounts(b, reader)
		for i := range m {
			m[i] -= m0[i]
		}
		b.ReportMetric(marginQuantile(m, 0.50).Seconds()*1000, "margin-p50-ms")
		b.ReportMetric(marginQuantile(m, 0.01).Seconds()*1000, "margin-p1-ms")
	}
}

// forEach runs fn(0..n-1) on k goroutines and returns the first error.
func forEach(n, k int, fn func(i int) error) error {
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	errs := make(chan error, k)
	var wg sync.WaitGroup
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// closeAll closes every opened session, 32 at a time.
func closeAll(sessions []idleSession) {
	_ = forEach(len(sessions), 32, func(i int) error {
		if s := sessions[i]; s.close != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = s.close(ctx)
		}
		return nil
	})
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// marginStep is the renew-margin histogram's bucket width (to 10 s, the TTL).
const marginStep = 25 * time.Millisecond

func marginBounds() []float64 {
	var out []float64
	for d := time.Duration(0); d <= 10*time.Second; d += marginStep {
		out = append(out, d.Seconds())
	}
	return out
}

// marginCounts reads the renew-margin histogram's bucket counts (summed
// over its data points; one bucket more than marginBounds).
func marginCounts(b *testing.B, reader *sdkmetric.ManualReader) []uint64 {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		b.Fatal(err)
	}
	out := make([]uint64, len(marginBounds())+1)
	for _, sm := range rm.ScopeMetrics {
		for _, met := range sm.Metrics {
			h, ok := met.Data.(metricdata.Histogram[float64])
			if !ok || met.Name != "concord.session.renew_margin" {
				continue
			}
			for _, dp := range h.DataPoints {
				for i, c := range dp.BucketCounts {
					out[i] += c
				}
			}
		}
	}
	return out
}

// marginQuantile is the q quantile of the histogram counts, as the lower
// bound of its bucket (the margin was at least that); -1 ms for an empty
// histogram, or a margin below zero.
func marginQuantile(counts []uint64, q float64) time.Duration {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return -time.Millisecond
	}
	rank := uint64(q * float64(total))
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen > rank {
			if i == 0 {
				return -time.Millisecond
			}
			return time.Duration(i-1) * marginStep
		}
	}
	return 10 * time.Second
}

// watchGauges reads the server's open watch streams and watchers
// (embedtest.Server.Gauges; none on an external cluster).
func watchGauges(b *testing.B, srv *embedtest.Server) (streams, watchers float64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := srv.Gauges(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return g["etcd_debugging_mvcc_watch_stream_total"], g["etcd_debugging_mvcc_watcher_total"]
}
