package discovery_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// BenchmarkScaleDiscovery is a seed-scale service registry on one server
// (fsync off): how concord's discovery cost grows from 1,000 to 100,000
// instances, with etcd's client/v3/naming/endpoints Manager reading the
// same records beside it (Go's JSON decoding reads concord's record as an
// endpoints.Endpoint, so both load and fan out the same data).
//
// The fleet: n instances, a tenth of them in one big service (10,000 at
// n=100,000) and the rest in services of 100 (901 services at 100,000),
// registered by n/100 Registries (1,000 at 100,000) of 100 instances each,
// the Registries sharing 8 client connections as the processes of a host
// share a proxy. Measured, in this order:
//
//   - regs/s: the whole fleet registering, 64 Registries at a time;
//   - load-small-* and load-big-*: the time a new Watcher (and, as etcd-*,
//     a new endpoints watch channel) takes to load a 100-instance service's
//     snapshot (100 loads) and the big service's (20 loads), p50 and p99
//     (target: p99 under 1 s for 10,000 instances);
//   - quiet-big-*: with 100 Watchers of the big service and nothing
//     changing, the server's unary requests per second and its CPU per
//     watcher per second (each Watcher's staleness probe reads once a
//     second; one in ten of those reads ranges over the whole service),
//     over 5 s after 2 s to settle;
//   - heap-B/instance: client heap (runtime.MemStats.HeapAlloc after GC,
//     before and after) per cached instance with one Watcher on every
//     service, all instances cached (target: under 1 KiB); not reported
//     embedded, where the server's heap is the process's too;
//   - quiet-*: the same with the Watchers of every service and 1,000 more on
//     one 100-instance service (on 16 connections), and the server's watch
//     streams and watchers;
//   - fanout-*: one instance's metadata update until all 1,000 watchers of
//     its service have it, p50 and p99 over 50 updates, for concord's
//     Watchers and then etcd's watch channels (target: p99 under 50 ms),
//     with the server's stats (and the client's CPU) per update;
//   - sessions-lost and reregistrations over the whole run: Registries
//     whose session was lost (no keepalive answered in time) and the
//     instances they registered again (target: none); and after each phase
//     the sessions lost so far, the lowest renew margin and the longest
//     keepalive round trip, to tell which phase starved the keepalives.
//
// Instances default to 1000,100000 (CONCORD_SCALE_INSTANCES overrides, a
// comma-separated list). The 100,000 run needs a few minutes and ~2 GB:
//
//	CONCORD_ETCD_BIN=~/.cache/concord/etcd/3.7.3/etcd \
//	  go test -run '^$' -bench ScaleDiscovery -benchtime 1x -timeout 60m ./discovery
func BenchmarkScaleDiscovery(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			for _, n := range scaleInstances(b) {
				b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
					srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
					benchScaleDiscovery(b, srv, n)
				})
			}
		})
	}
}

const (
	scaleRegClients   = 8    // connections the Registries share
	scaleWatchClients = 16   // connections the watchers share
	scaleFanout       = 1000 // watchers of the updated service
	scaleService      = 100  // instances per small service
	scaleBigWatchers  = 100  // watchers of the big service, for its quiet cost
	scaleQuiet        = 5 * time.Second
	scaleSettle       = 2 * time.Second
)

func scaleInstances(b *testing.B) []int {
	v := os.Getenv("CONCORD_SCALE_INSTANCES")
	if v == "" {
		return []int{1000, 100000}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 10*scaleService || n%(10*scaleService) != 0 {
			b.Fatalf("CONCORD_SCALE_INSTANCES=%q: want multiples of %d", v, 10*scaleService)
		}
		out = append(out, n)
	}
	return out
}

// scaleFleet is the registered fleet: instance i is registered by Registry
// i % len(regs) under service(i).
type scaleFleet struct {
	n, big  int
	metrics *sdkmetric.ManualReader // the Registries' (and their sessions') metrics
	regs    []*discovery.Registry
	handles []*discovery.Registration
	rc, wc  []*clientv3.Client // the Registries' and the watchers' connections
}

func (f *scaleFleet) service(i int) string {
	if i < f.big {
		return "scale-big"
	}
	return fmt.Sprintf("scale-%04d", (i-f.big)/scaleService)
}

func (f *scaleFleet) services() []string {
	out := []string{f.service(0)}
	for i := f.big; i < f.n; i += scaleService {
		out = append(out, f.service(i))
	}
	return out
}

func benchScaleDiscovery(b *testing.B, srv *embedtest.Server, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	f := &scaleFleet{n: n, big: n / 10, handles: make([]*discovery.Registration, n)}
	f.rc, f.wc = scaleClients(b, srv, scaleRegClients), scaleClients(b, srv, scaleWatchClients)
	defer f.close()
	b.ResetTimer() // no ResetTimer after this: it would drop the metrics reported
	regsPerSec := f.register(ctx, b)
	f.lostBy(b, "register")
	b.ReportMetric(regsPerSec, "regs/s")
	b.ReportMetric(float64(len(f.services())), "services")

	small := f.services()[1:]
	for _, impl := range []string{"concord", "etcd"} {
		pfx := "load"
		if impl == "etcd" {
			pfx = "etcd-load"
		}
		reportQuantiles(b, pfx+"-small", scaleLoads(ctx, b, f.wc, impl, 100*b.N, func(k int) string { return small[k%len(small)] }, scaleService))
		reportQuantiles(b, pfx+"-big", scaleLoads(ctx, b, f.wc, impl, 20*b.N, func(int) string { return f.service(0) }, f.big))
	}
	f.lostBy(b, "loads")

	big := openWatchers(ctx, b, f.wc, repeat(f.service(0), scaleBigWatchers))
	quietCost(ctx, b, srv, "quiet-big", scaleBigWatchers)
	f.lostBy(b, "quiet-big")
	closeWatchers(big)

	before := liveHeap()
	cache := openWatchers(ctx, b, f.wc, f.services())
	defer closeWatchers(cache)
	if !strings.Contains(b.Name(), "server=embedded") { // else the server's heap is in it
		b.ReportMetric(float64(liveHeap()-before)/float64(n), "heap-B/instance")
	}

	target := f.handles[f.big] // the first instance of the first small service
	fan := openWatchers(ctx, b, f.wc, repeat(target.Service(), scaleFanout))
	quietCost(ctx, b, srv, "quiet", len(cache)+len(fan))
	f.lostBy(b, "quiet")
	streams, watchers := watchGauges(b, srv)
	b.ReportMetric(streams, "srv-watch-streams")
	b.ReportMetric(watchers, "srv-watchers")

	rounds := 50 * b.N
	st0 := embedtest.BenchStats(b, srv)
	reportQuantiles(b, "fanout", fanoutConcord(ctx, b, target, fan, rounds))
	embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, rounds, "fanout")
	closeWatchers(fan)
	f.lostBy(b, "fanout")
	reportQuantiles(b, "etcd-fanout", fanoutEtcd(ctx, b, srv, f.wc, target, rounds))

	b.StopTimer()
	// A Registry whose session was lost (a keepalive not answered in time
	// on a starved machine) registers its instances again.
	b.ReportMetric(float64(sumCounter(b, f.metrics, "concord.session.lost")), "sessions-lost")
	b.ReportMetric(float64(sumCounter(b, f.metrics, "concord.discovery.reregistrations")), "reregistrations")
}

// lostBy reports the Registries' sessions lost so far, after phase, and
// the lowest renew margin (time left before a session's renew deadline
// when its keepalive was answered) seen so far, to 25 ms.
func (f *scaleFleet) lostBy(b *testing.B, phase string) {
	b.ReportMetric(float64(sumCounter(b, f.metrics, "concord.session.lost")), "sessions-lost-by-"+phase)
	b.ReportMetric(float64(minMargin(b, f.metrics).Milliseconds()), "min-renew-margin-ms-by-"+phase)
	b.ReportMetric(maxRTT(b, f.metrics).Seconds()*1000, "max-keepalive-rtt-ms-by-"+phase)
}

// maxRTT is the longest keepalive round trip of the Registries' sessions
// so far (the answered ones).
func maxRTT(b *testing.B, r *sdkmetric.ManualReader) time.Duration {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		b.Fatal(err)
	}
	var most float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.ExponentialHistogram[float64])
			if !ok || m.Name != "concord.session.keepalive.duration" {
				continue
			}
			for _, dp := range h.DataPoints {
				if v, ok := dp.Max.Value(); ok && v > most {
					most = v
				}
			}
		}
	}
	return time.Duration(most * float64(time.Second))
}

// marginStep is the renew-margin histogram's bucket width (to 10 s, the
// Registries' TTL).
const marginStep = 25 * time.Millisecond

func marginBounds() []float64 {
	var out []float64
	for d := time.Duration(0); d <= 10*time.Second; d += marginStep {
		out = append(out, d.Seconds())
	}
	return out
}

// minMargin is the lower bound of the lowest non-empty bucket of the
// renew-margin histogram (-25 ms: below zero; 10 s: empty).
func minMargin(b *testing.B, r *sdkmetric.ManualReader) time.Duration {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		b.Fatal(err)
	}
	lowest := len(marginBounds())
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok || m.Name != "concord.session.renew_margin" {
				continue
			}
			for _, dp := range h.DataPoints {
				for i, c := range dp.BucketCounts {
					if c > 0 && i < lowest {
						lowest = i
					}
				}
			}
		}
	}
	return time.Duration(lowest-1) * marginStep
}

// sumCounter is the sum of an int64 counter's data points.
func sumCounter(b *testing.B, r *sdkmetric.ManualReader, name string) int64 {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

func scaleClients(b *testing.B, srv *embedtest.Server, k int) []*clientv3.Client {
	out := make([]*clientv3.Client, k)
	for i := range out {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		out[i] = c
	}
	return out
}

// register starts n/100 Registries, waits for their leases, then registers
// the fleet, 64 Registries at a time; it returns registrations per second.
func (f *scaleFleet) register(ctx context.Context, b *testing.B) float64 {
	nregs := f.n / scaleService
	f.metrics = sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.metrics), sdkmetric.WithView(sdkmetric.NewView(
		sdkmetric.Instrument{Name: "concord.session.renew_margin"},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: marginBounds()}})),
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Name: "concord.session.keepalive.duration"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20, NoMinMax: false}})))
	for r := range nregs {
		reg, err := discovery.NewRegistry(f.rc[r%len(f.rc)], discovery.WithMeterProvider(mp))
		if err != nil {
			b.Fatal(err)
		}
		f.regs = append(f.regs, reg)
	}
	waitLeases(ctx, b, f.regs)
	elapsed := inParallel(b, 64, nregs, func(r int) error {
		for i := r; i < f.n; i += nregs {
			g, err := f.regs[r].Register(ctx, f.service(i), discovery.Instance{ID: fmt.Sprintf("i%06d", i), Addr: "10.0.0.1:8080"})
			if err != nil {
				return err
			}
			f.handles[i] = g
		}
		return nil
	})
	return float64(f.n) / elapsed.Seconds()
}

// waitLeases polls until every Registry has its first lease (granted in the
// background), so that registration is timed alone.
func waitLeases(ctx context.Context, b *testing.B, regs []*discovery.Registry) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, r := range regs {
		for r.Lease() == clientv3.NoLease {
			select {
			case <-tick.C:
			case <-ctx.Done():
				b.Fatal("registry leases:", ctx.Err())
			}
		}
	}
}

func (f *scaleFleet) close() {
	_ = forEachIndex(len(f.regs), 32, func(r int) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return f.regs[r].Close(ctx)
	})
}

// scaleLoads opens k watchers one after another (concord's Watcher, or an
// endpoints watch channel), each on service(j), and returns how long each
// took to hold the service's want instances.
func scaleLoads(ctx context.Context, b *testing.B, cs []*clientv3.Client, impl string, k int, service func(j int) string, want int) []time.Duration {
	var out []time.Duration
	for j := range k {
		c := cs[j%len(cs)]
		start := time.Now()
		var got int
		if impl == "concord" {
			w, err := discovery.NewWatcher(c, service(j))
			if err != nil {
				b.Fatal(err)
			}
			select {
			case <-w.Synced():
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
			got = len(w.Instances())
			out = append(out, time.Since(start))
			_ = w.Close(ctx)
		} else {
			wctx, wcancel := context.WithCancel(ctx)
			m, err := endpoints.NewManager(c, service(j)+"/.instances")
			if err != nil {
				b.Fatal(err)
			}
			ch, err := m.NewWatchChannel(wctx)
			if err != nil {
				b.Fatal(err)
			}
			got = len(<-ch)
			out = append(out, time.Since(start))
			wcancel()
			for range ch { // its goroutine ends once drained
			}
		}
		if got != want {
			b.Fatalf("%s %s: %d instances, want %d", impl, service(j), got, want)
		}
	}
	return out
}

// quietCost waits scaleQuiet with watchers Watchers open and nothing
// changing, and reports the server's unary requests per second and its CPU
// (the process's, embedded) per watcher per second.
func quietCost(ctx context.Context, b *testing.B, srv *embedtest.Server, label string, watchers int) {
	wait := func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
	}
	wait(scaleSettle) // not a condition: lets the last phase's tail (GC, closing watches) pass
	st0 := embedtest.BenchStats(b, srv)
	wait(scaleQuiet)
	st := embedtest.BenchStats(b, srv).Sub(st0)
	secs := scaleQuiet.Seconds()
	b.ReportMetric(float64(st.Unary)/secs, label+"-srv-unary/s")
	perWatcher := func(d time.Duration) float64 { return float64(d.Microseconds()) / secs / float64(watchers) }
	if strings.Contains(b.Name(), "server=process") {
		b.ReportMetric(perWatcher(st.CPU), label+"-server-cpu-us/watcher/s")
		b.ReportMetric(perWatcher(st.Client), label+"-client-cpu-us/watcher/s")
	} else {
		b.ReportMetric(perWatcher(st.CPU), label+"-proc-cpu-us/watcher/s")
	}
}

// openWatchers opens a Watcher per entry of services (on cs in turn) and
// waits for all of them to be synced.
func openWatchers(ctx context.Context, b *testing.B, cs []*clientv3.Client, services []string) []*discovery.Watcher {
	ws := make([]*discovery.Watcher, len(services))
	for j, s := range services {
		w, err := discovery.NewWatcher(cs[j%len(cs)], s)
		if err != nil {
			b.Fatal(err)
		}
		ws[j] = w
	}
	for _, w := range ws {
		select {
		case <-w.Synced():
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
	}
	return ws
}

func closeWatchers(ws []*discovery.Watcher) {
	for _, w := range ws {
		_ = w.Close(context.Background())
	}
}

func repeat(s string, k int) []string {
	out := make([]string, k)
	for i := range out {
		out[i] = s
	}
	return out
}

// fanoutConcord updates g's metadata rounds times and returns, for each,
// the time from the update until every watcher in ws has it.
func fanoutConcord(ctx context.Context, b *testing.B, g *discovery.Registration, ws []*discovery.Watcher, rounds int) []time.Duration {
	in := g.Instance()
	var out []time.Duration
	for i := range rounds {
		v := "c" + strconv.Itoa(i)
		in.Metadata = map[string]string{"v": v}
		start := time.Now()
		if err := g.Update(ctx, in); err != nil {
			b.Fatal(err)
		}
		for _, w := range ws {
			for !watcherHas(w, in.ID, v) {
				select {
				case <-w.Changes():
				case <-ctx.Done():
					b.Fatal(ctx.Err())
				}
			}
		}
		out = append(out, time.Since(start))
	}
	return out
}

func watcherHas(w *discovery.Watcher, id, v string) bool {
	in, ok := w.Lookup(id)
	return ok && in.Metadata["v"] == v
}

// fanoutEtcd is fanoutConcord with scaleFanout endpoints watch channels of
// g's service (on cs in turn) reading the updates; it reports the server's
// stats per update (as the caller does for concord's).
func fanoutEtcd(ctx context.Context, b *testing.B, srv *embedtest.Server, cs []*clientv3.Client, g *discovery.Registration, rounds int) []time.Duration {
	wctx, wcancel := context.WithCancel(ctx)
	chs := make([]endpoints.WatchChannel, scaleFanout)
	defer func() {
		wcancel()
		for _, ch := range chs {
			for range ch { // its goroutine ends once drained
			}
		}
	}()
	for j := range chs {
		m, err := endpoints.NewManager(cs[j%len(cs)], g.Service()+"/.instances")
		if err != nil {
			b.Fatal(err)
		}
		if chs[j], err = m.NewWatchChannel(wctx); err != nil {
			b.Fatal(err)
		}
		<-chs[j] // the initial list
	}
	in := g.Instance()
	var out []time.Duration
	st0 := embedtest.BenchStats(b, srv)
	defer func() { embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, rounds, "etcd-fanout") }()
	for i := range rounds {
		v := "e" + strconv.Itoa(i)
		in.Metadata = map[string]string{"v": v}
		start := time.Now()
		if err := g.Update(ctx, in); err != nil {
			b.Fatal(err)
		}
		for _, ch := range chs {
			for seen := false; !seen; {
				ups, ok := <-ch
				if !ok {
					b.Fatal("endpoints watch channel closed")
				}
				for _, u := range ups {
					md, _ := u.Endpoint.Metadata.(map[string]any)
					seen = seen || md["v"] == v
				}
			}
		}
		out = append(out, time.Since(start))
	}
	return out
}

// forEachIndex runs fn(0..n-1) on k goroutines; it returns the first error.
func forEachIndex(n, k int, fn func(i int) error) error {
	errs := make(chan error, n)
	sem := make(chan struct{}, k)
	done := make(chan struct{}, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; done <- struct{}{} }()
			if err := fn(i); err != nil {
				errs <- err
			}
		}()
	}
	for range n {
		<-done
	}
	close(errs)
	return <-errs
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

// liveHeap is the bytes of live heap objects after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
