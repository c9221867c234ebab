package discovery_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// BenchmarkFleet is a platform's worth of discovery on one embedded server
// (fsync on), concord and etcd's endpoints Manager in the same run:
// 10,000 instances of 100 services, registered by 100 processes (a
// Registry, or a lease for etcd's Manager, each holding one instance of
// every service), 10 registering at once. Reported: registrations per
// second; the time a new watcher of a 100-instance service takes to load
// its snapshot (p50/p99 over the 100 services); heap bytes per cached
// instance with a Watcher on every service (concord only: etcd's Manager
// keeps no cache); the time an update takes to reach 100 watchers of one
// service on 10 connections (p50/p99 over 50 updates).
//
//	go test -run '^$' -bench Fleet -benchtime 1x ./discovery
func BenchmarkFleet(b *testing.B) {
	const services, procs, parallel, watchers, updates = 100, 100, 10, 100, 50
	srv := embedtest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	clients := make([]*clientv3.Client, parallel)
	for i := range clients {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	svc := func(impl string, s int) string { return fmt.Sprintf("fleet-%s-%03d", impl, s) }

	b.Run("concord", func(b *testing.B) {
		var regs []*discovery.Registry
		defer func() {
			for _, r := range regs {
				_ = r.Close(context.Background())
			}
		}()
		var handles sync.Map // "svc/proc" -> *discovery.Registration
		for p := range procs {
			r, err := discovery.NewRegistry(clients[p%parallel])
			if err != nil {
				b.Fatal(err)
			}
			regs = append(regs, r)
		}
		for _, r := range regs { // leases granted before the clock starts, as for etcd's
			for r.Lease() == clientv3.NoLease {
				time.Sleep(time.Millisecond)
			}
		}
		elapsed := inParallel(b, parallel, procs, func(p int) error {
			for s := range services {
				g, err := regs[p].Register(ctx, svc("concord", s), discovery.Instance{ID: fmt.Sprintf("p%03d", p), Addr: "127.0.0.1:1"})
				if err != nil {
					return err
				}
				handles.Store(fmt.Sprint(s, "/", p), g)
			}
			return nil
		})
		b.ReportMetric(float64(services*procs)/elapsed.Seconds(), "regs/s")

		before := heapInUse()
		var loads []time.Duration
		var ws []*discovery.Watcher
		defer func() {
			for _, w := range ws {
				w.Close(context.Background())
			}
		}()
		for s := range services {
			start := time.Now()
			w, err := discovery.NewWatcher(clients[s%parallel], svc("concord", s))
			if err != nil {
				b.Fatal(err)
			}
			<-w.Synced()
			loads = append(loads, time.Since(start))
			if n := len(w.Instances()); n != procs {
				b.Fatalf("%s: %d instances, want %d", svc("concord", s), n, procs)
			}
			ws = append(ws, w)
		}
		b.ReportMetric(float64(heapInUse()-before)/float64(services*procs), "B/instance")
		reportQuantiles(b, "load", loads)

		var prop []*discovery.Watcher
		for i := range watchers {
			w, err := discovery.NewWatcher(clients[i%parallel], svc("concord", 0))
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close(context.Background())
			<-w.Synced()
			prop = append(prop, w)
		}
		g, _ := handles.Load("0/0")
		var lat, wlat []time.Duration
		for i := range updates {
			v := fmt.Sprint(i)
			start := time.Now()
			if err := g.(*discovery.Registration).Update(ctx, discovery.Instance{ID: "p000", Addr: "127.0.0.1:1", Metadata: map[string]string{"v": v}}); err != nil {
				b.Fatal(err)
			}
			wlat = append(wlat, time.Since(start))
			for _, w := range prop {
				for !hasVersion(w, v) {
					select {
					case <-w.Changes():
					case <-ctx.Done():
						b.Fatal(ctx.Err())
					}
				}
			}
			lat = append(lat, time.Since(start))
		}
		reportQuantiles(b, "update", lat)
		reportQuantiles(b, "write", wlat)
	})

	b.Run("etcd", func(b *testing.B) {
		leases := make([]clientv3.LeaseID, procs)
		for p := range procs {
			l, err := clients[p%parallel].Grant(ctx, 10)
			if err != nil {
				b.Fatal(err)
			}
			leases[p] = l.ID
			defer clients[p%parallel].Revoke(context.Background(), l.ID)
		}
		managers := make([]endpoints.Manager, services)
		for s := range services {
			m, err := endpoints.NewManager(clients[s%parallel], svc("etcd", s))
			if err != nil {
				b.Fatal(err)
			}
			managers[s] = m
		}
		elapsed := inParallel(b, parallel, procs, func(p int) error {
			for s := range services {
				key := fmt.Sprintf("%s/p%03d", svc("etcd", s), p)
				if err := managers[s].AddEndpoint(ctx, key, endpoints.Endpoint{Addr: "127.0.0.1:1"}, clientv3.WithLease(leases[p])); err != nil {
					return err
				}
			}
			return nil
		})
		b.ReportMetric(float64(services*procs)/elapsed.Seconds(), "regs/s")

		wctx, wcancel := context.WithCancel(ctx)
		var chs []endpoints.WatchChannel
		defer func() {
			// etcd's watch goroutine blocks sending unless drained.
			wcancel()
			for _, ch := range chs {
				for range ch {
				}
			}
		}()
		var loads []time.Duration
		for s := range services {
			start := time.Now()
			m, err := endpoints.NewManager(clients[s%parallel], svc("etcd", s))
			if err != nil {
				b.Fatal(err)
			}
			ch, err := m.NewWatchChannel(wctx)
			if err != nil {
				b.Fatal(err)
			}
			if ups := <-ch; len(ups) != procs {
				b.Fatalf("%s: %d endpoints, want %d", svc("etcd", s), len(ups), procs)
			}
			loads = append(loads, time.Since(start))
			chs = append(chs, ch)
		}
		reportQuantiles(b, "load", loads)

		var prop []endpoints.WatchChannel
		for i := range watchers {
			m, err := endpoints.NewManager(clients[i%parallel], svc("etcd", 0))
			if err != nil {
				b.Fatal(err)
			}
			ch, err := m.NewWatchChannel(wctx)
			if err != nil {
				b.Fatal(err)
			}
			<-ch
			chs = append(chs, ch)
			prop = append(prop, ch)
		}
		key := svc("etcd", 0) + "/p000"
		var lat, wlat []time.Duration
		for i := range updates {
			v := fmt.Sprint(i)
			start := time.Now()
			if err := managers[0].AddEndpoint(ctx, key, endpoints.Endpoint{Addr: "127.0.0.1:1", Metadata: v}, clientv3.WithLease(leases[0])); err != nil {
				b.Fatal(err)
			}
			wlat = append(wlat, time.Since(start))
			for _, ch := range prop {
				for seen := false; !seen; {
					ups, ok := <-ch
					if !ok {
						b.Fatal("watch channel closed")
					}
					for _, u := range ups {
						seen = seen || u.Endpoint.Metadata == v
					}
				}
			}
			lat = append(lat, time.Since(start))
		}
		reportQuantiles(b, "update", lat)
		reportQuantiles(b, "write", wlat)
	})
}

// inParallel runs fn(0..n-1) on k goroutines and returns the wall time.
func inParallel(b *testing.B, k, n int, fn func(i int) error) time.Duration {
	b.Helper()
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	errs := make(chan error, k)
	start := time.Now()
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
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return elapsed
}

func hasVersion(w *discovery.Watcher, v string) bool {
	in, ok := w.Lookup("p000")
	return ok && in.Metadata["v"] == v
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func reportQuantiles(b *testing.B, name string, d []time.Duration) {
	slices.Sort(d)
	q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), name+"-p50-ms")
	b.ReportMetric(q(0.99), name+"-p99-ms")
}
