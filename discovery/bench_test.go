package discovery_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// The discovery benchmarks run concord's Registry and Watcher and etcd's own
// client/v3/naming/endpoints Manager on the same embedded server in the same
// run:
//
//	go test -run '^$' -bench . -benchtime 200x ./discovery
//
// Register: one registration after another, all under one lease.
// Propagate: time from an instance's metadata update until every one of 8
// watchers (each on its own client connection) has seen it.

const benchWatchers = 8

func BenchmarkRegister(b *testing.B) {
	srv := embedtest.Start(b)
	ctx := context.Background()
	b.Run("concord", func(b *testing.B) {
		r, err := discovery.NewRegistry(srv.Client)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close(ctx)
		if _, err := r.Register(ctx, "bench-reg", discovery.Instance{ID: "warm", Addr: "127.0.0.1:1"}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := range b.N {
			if _, err := r.Register(ctx, "bench-reg", discovery.Instance{ID: "i" + strconv.Itoa(i), Addr: "127.0.0.1:1"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("etcd", func(b *testing.B) {
		em, err := endpoints.NewManager(srv.Client, "bench-etcd-reg")
		if err != nil {
			b.Fatal(err)
		}
		lease, err := srv.Client.Grant(ctx, 10)
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Client.Revoke(ctx, lease.ID)
		ka, err := srv.Client.KeepAlive(ctx, lease.ID)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for range ka {
			}
		}()
		b.ResetTimer()
		for i := range b.N {
			if err := em.AddEndpoint(ctx, "bench-etcd-reg/i"+strconv.Itoa(i), endpoints.Endpoint{Addr: "127.0.0.1:1"}, clientv3.WithLease(lease.ID)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPropagate(b *testing.B) {
	srv := embedtest.Start(b)
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
		r, err := discovery.NewRegistry(srv.Client)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close(ctx)
		g, err := r.Register(ctx, "bench-prop", discovery.Instance{ID: "x", Addr: "127.0.0.1:1"})
		if err != nil {
			b.Fatal(err)
		}
		ws := make([]*discovery.Watcher, len(clients))
		for i, c := range clients {
			if ws[i], err = discovery.NewWatcher(c, "bench-prop"); err != nil {
				b.Fatal(err)
			}
			defer ws[i].Close(context.Background())
			<-ws[i].Synced()
		}
		b.ResetTimer()
		for i := range b.N {
			v := strconv.Itoa(i)
			if err := g.Update(ctx, discovery.Instance{ID: "x", Addr: "127.0.0.1:1", Metadata: map[string]string{"v": v}}); err != nil {
				b.Fatal(err)
			}
			for _, w := range ws {
				for {
					if in := w.Instances(); len(in) == 1 && in[0].Metadata["v"] == v {
						break
					}
					select {
					case <-w.Changes():
					case <-ctx.Done():
						b.Fatal(ctx.Err())
					}
				}
			}
		}
	})
	b.Run(fmt.Sprintf("etcd/watchers=%d", benchWatchers), func(b *testing.B) {
		em, err := endpoints.NewManager(srv.Client, "bench-etcd-prop")
		if err != nil {
			b.Fatal(err)
		}
		if err := em.AddEndpoint(ctx, "bench-etcd-prop/x", endpoints.Endpoint{Addr: "127.0.0.1:1"}); err != nil {
			b.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		chs := make([]endpoints.WatchChannel, len(clients))
		for i, c := range clients {
			m, err := endpoints.NewManager(c, "bench-etcd-prop")
			if err != nil {
				b.Fatal(err)
			}
			if chs[i], err = m.NewWatchChannel(wctx); err != nil {
				b.Fatal(err)
			}
			<-chs[i] // the initial list
		}
		b.ResetTimer()
		for i := range b.N {
			v := strconv.Itoa(i)
			if err := em.AddEndpoint(ctx, "bench-etcd-prop/x", endpoints.Endpoint{Addr: "127.0.0.1:1", Metadata: v}); err != nil {
				b.Fatal(err)
			}
			for _, ch := range chs {
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
		}
	})
}
