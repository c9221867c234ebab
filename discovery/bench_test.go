package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// The discovery benchmarks run concord's Registry and Watcher and etcd's own
// client/v3/naming/endpoints Manager on the same server in the same run,
// first a separate etcd process (CONCORD_ETCD_BIN, as production runs it),
// then embedded, each beside a floor measured on the same server: the least
// etcd work the operation could need. Besides their figures they report the
// server's own stats per operation (embedtest.ServerStats.Report: its CPU,
// unary requests, watch requests and responses, watch events):
//
//	go test -run '^$' -bench . -benchtime 200x ./discovery
//
// Register: one registration after another, all under one lease; floor:
// one put of a new key under a lease per registration.
// Propagate: time from an instance's metadata update until every one of 8
// watchers (each on its own client connection) has seen it; floor: one put
// and its watch event to each of the 8 watchers.

const benchWatchers = 8

var benchRun atomic.Int64

func BenchmarkRegister(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			benchRegister(b, srv)
		})
	}
}

func benchRegister(b *testing.B, srv *embedtest.Server) {
	ctx := context.Background()
	b.Run("concord", func(b *testing.B) {
		r, err := discovery.NewRegistry(srv.Client)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close(ctx)
		svc := fmt.Sprintf("bench-reg-%d", benchRun.Add(1))
		if _, err := r.Register(ctx, svc, discovery.Instance{ID: "warm", Addr: "127.0.0.1:1"}); err != nil {
			b.Fatal(err)
		}
		measureEach(b, srv, "registration", func(i int) error {
			_, err := r.Register(ctx, svc, discovery.Instance{ID: "i" + strconv.Itoa(i), Addr: "127.0.0.1:1"})
			return err
		})
	})
	b.Run("etcd", func(b *testing.B) {
		svc := fmt.Sprintf("bench-etcd-reg-%d", benchRun.Add(1))
		em, err := endpoints.NewManager(srv.Client, svc)
		if err != nil {
			b.Fatal(err)
		}
		lease, stop := benchLease(b, srv)
		defer stop()
		measureEach(b, srv, "registration", func(i int) error {
			return em.AddEndpoint(ctx, svc+"/i"+strconv.Itoa(i), endpoints.Endpoint{Addr: "127.0.0.1:1"}, clientv3.WithLease(lease))
		})
	})
	b.Run("floor", func(b *testing.B) {
		pfx := fmt.Sprintf("bench-floor-reg-%d/", benchRun.Add(1))
		lease, stop := benchLease(b, srv)
		defer stop()
		measureEach(b, srv, "registration", func(i int) error {
			_, err := srv.Client.Put(ctx, pfx+strconv.Itoa(i), "127.0.0.1:1", clientv3.WithLease(lease))
			return err
		})
	})
}

// benchLease grants a 10 s lease and keeps it alive until stop, which
// revokes it.
func benchLease(b *testing.B, srv *embedtest.Server) (clientv3.LeaseID, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	lease, err := srv.Client.Grant(ctx, 10)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	ka, err := srv.Client.KeepAlive(ctx, lease.ID)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ka {
		}
	}()
	return lease.ID, func() {
		cancel()
		<-done
		_, _ = srv.Client.Revoke(context.Background(), lease.ID)
	}
}

// measureEach runs op b.N times in a row and reports the server's stats
// per op, in unit.
func measureEach(b *testing.B, srv *embedtest.Server, unit string, op func(i int) error) {
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for i := range b.N {
		if err := op(i); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, unit)
}

func BenchmarkPropagate(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			benchPropagate(b, srv)
		})
	}
}

func benchPropagate(b *testing.B, srv *embedtest.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clients := make([]*clientv3.Client, benchWatchers)
	for i := range clients {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	b.Run(fmt.Sprintf("concord/watchers=%d", benchWatchers), func(b *testing.B) {
		svc := fmt.Sprintf("bench-prop-%d", benchRun.Add(1))
		r, err := discovery.NewRegistry(srv.Client)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close(ctx)
		g, err := r.Register(ctx, svc, discovery.Instance{ID: "x", Addr: "127.0.0.1:1"})
		if err != nil {
			b.Fatal(err)
		}
		ws := make([]*discovery.Watcher, len(clients))
		for i, c := range clients {
			if ws[i], err = discovery.NewWatcher(c, svc); err != nil {
				b.Fatal(err)
			}
			defer ws[i].Close(context.Background())
			<-ws[i].Synced()
		}
		measureEach(b, srv, "update", func(i int) error {
			v := strconv.Itoa(i)
			if err := g.Update(ctx, discovery.Instance{ID: "x", Addr: "127.0.0.1:1", Metadata: map[string]string{"v": v}}); err != nil {
				return err
			}
			for _, w := range ws {
				for {
					if in := w.Instances(); len(in) == 1 && in[0].Metadata["v"] == v {
						break
					}
					select {
					case <-w.Changes():
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			return nil
		})
	})
	b.Run(fmt.Sprintf("etcd/watchers=%d", benchWatchers), func(b *testing.B) {
		svc := fmt.Sprintf("bench-etcd-prop-%d", benchRun.Add(1))
		em, err := endpoints.NewManager(srv.Client, svc)
		if err != nil {
			b.Fatal(err)
		}
		if err := em.AddEndpoint(ctx, svc+"/x", endpoints.Endpoint{Addr: "127.0.0.1:1"}); err != nil {
			b.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		chs := make([]endpoints.WatchChannel, len(clients))
		for i, c := range clients {
			m, err := endpoints.NewManager(c, svc)
			if err != nil {
				b.Fatal(err)
			}
			if chs[i], err = m.NewWatchChannel(wctx); err != nil {
				b.Fatal(err)
			}
			<-chs[i] // the initial list
		}
		measureEach(b, srv, "update", func(i int) error {
			v := strconv.Itoa(i)
			if err := em.AddEndpoint(ctx, svc+"/x", endpoints.Endpoint{Addr: "127.0.0.1:1", Metadata: v}); err != nil {
				return err
			}
			for _, ch := range chs {
				for seen := false; !seen; {
					ups, ok := <-ch
					if !ok {
						return errors.New("watch channel closed")
					}
					for _, u := range ups {
						seen = seen || u.Endpoint.Metadata == v
					}
				}
			}
			return nil
		})
	})
	b.Run(fmt.Sprintf("floor/watchers=%d", benchWatchers), func(b *testing.B) {
		key := fmt.Sprintf("bench-floor-prop-%d", benchRun.Add(1))
		var wchs []clientv3.WatchChan
		for _, c := range clients {
			wch := c.Watch(ctx, key, clientv3.WithCreatedNotify())
			if wr := <-wch; !wr.Created {
				b.Fatalf("watch not created: %v", wr.Err())
			}
			wchs = append(wchs, wch)
		}
		measureEach(b, srv, "update", func(i int) error {
			if _, err := srv.Client.Put(ctx, key, strconv.Itoa(i)); err != nil {
				return err
			}
			for _, wch := range wchs {
				for got := false; !got; {
					wr, ok := <-wch
					if !ok || wr.Err() != nil {
						return fmt.Errorf("watch ended: %v", wr.Err())
					}
					got = len(wr.Events) > 0
				}
			}
			return nil
		})
	})
}
