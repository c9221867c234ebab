package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// startBackend serves the gRPC health service on 127.0.0.1:0.
func startBackend(t *testing.T) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			s.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

func dial(t *testing.T, c *clientv3.Client, service, policy string) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient("concord:///"+service,
		grpc.WithResolvers(discovery.NewResolverBuilder(c, fastProbe()...)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(discovery.ServiceConfig(policy)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// calls makes n health checks and counts them by backend address.
func calls(ctx context.Context, hc healthpb.HealthClient, n int) (map[string]int, error) {
	got := map[string]int{}
	for range n {
		var p peer.Peer
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return got, err
		}
		got[p.Addr.String()]++
	}
	return got, nil
}

// A real gRPC client spreads calls over the registered servers with each
// policy, leaves out draining ones, follows weights, and stops calling a
// server that died.
func TestResolverBalances(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	r := newRegistry(t, srv.Client)
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	pc, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	mortal := newRegistry(t, pc) // the registry of the server that will die
	var addrs []string
	var regs []*discovery.Registration
	var stops []func()
	for i := range 3 {
		addr, stop := startBackend(t)
		reg := r
		if i == 0 {
			reg = mortal
		}
		g, err := reg.Register(ctx, "health", discovery.Instance{ID: fmt.Sprintf("h%d", i), Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		addrs, regs, stops = append(addrs, addr), append(regs, g), append(stops, stop)
	}

	for _, policy := range []string{discovery.RoundRobin, discovery.Random, discovery.WeightedRandom} {
		hc := dial(t, srv.Client, "health", policy)
		eventually(t, 10*time.Second, policy+" reaches every server", func() error {
			got, err := calls(ctx, hc, 30)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if got[a] == 0 {
					return fmt.Errorf("%s: %v, none to %s", policy, got, a)
				}
			}
			return nil
		})
	}

	hc := dial(t, srv.Client, "health", discovery.WeightedRandom)
	// Weights: h1 gets 9 shares, h2 one, h0 drains.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(regs[1].Update(ctx, discovery.Instance{ID: "h1", Addr: addrs[1], Weight: 9}))
	must(regs[0].Update(ctx, discovery.Instance{ID: "h0", Addr: addrs[0], Draining: true}))
	eventually(t, 10*time.Second, "weights and draining applied", func() error {
		got, err := calls(ctx, hc, 200)
		if err != nil {
			return err
		}
		if got[addrs[0]] > 0 || got[addrs[1]] < 3*got[addrs[2]] || got[addrs[2]] == 0 {
			return fmt.Errorf("calls %v (h0 %s draining, h1 %s weight 9, h2 %s)", got, addrs[0], addrs[1], addrs[2])
		}
		return nil
	})

	// h0 back to normal, then it dies: its process stops and its registry
	// is cut off from etcd, so its lease expires.
	must(regs[0].Update(ctx, discovery.Instance{ID: "h0", Addr: addrs[0], Weight: 9}))
	eventually(t, 10*time.Second, "h0 called again", func() error {
		got, err := calls(ctx, hc, 30)
		if err != nil {
			return err
		}
		if got[addrs[0]] == 0 {
			return fmt.Errorf("calls %v, none to h0", got)
		}
		return nil
	})
	w := newWatcher(t, srv.Client, "health")
	stops[0]()
	p.Blackhole()
	eventually(t, ttl+3*time.Second, "h0's record expires", current(w, "h1", "h2"))
	got, err := calls(ctx, hc, 50)
	if err != nil || got[addrs[0]] > 0 {
		t.Fatalf("after h0 died: %v, %v", got, err)
	}
}

// captureCC is a resolver.ClientConn that records what the resolver pushes
// (gRPC's side of the interface; etcd is real).
type captureCC struct {
	resolver.ClientConn
	mu    sync.Mutex
	state resolver.State
	err   error
	n     int
}

func (c *captureCC) UpdateState(s resolver.State) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state, c.err = s, nil
	c.n++
	return nil
}

func (c *captureCC) ReportError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
	c.n++
}

func (c *captureCC) get() (resolver.State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.err
}

// The resolver passes each instance's metadata as address attributes and
// reports an error when no instance is left.
func TestResolverPassesMetadata(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	r := newRegistry(t, srv.Client)
	md := map[string]string{"zone": "z1", "version": "1.2"}
	g, err := r.Register(ctx, "meta", discovery.Instance{ID: "m1", Addr: "127.0.0.1:7001", Metadata: md, Weight: 3})
	if err != nil {
		t.Fatal(err)
	}
	b := discovery.NewResolverBuilder(srv.Client, fastProbe()...)
	if b.Scheme() != discovery.Scheme {
		t.Fatalf("scheme %q", b.Scheme())
	}
	u, _ := url.Parse("concord:///meta")
	cc := &captureCC{}
	res, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	eventually(t, 5*time.Second, "state pushed", func() error {
		st, _ := cc.get()
		if len(st.Addresses) != 1 {
			return fmt.Errorf("addresses %v", st.Addresses)
		}
		in, ok := discovery.InstanceFromAddress(st.Addresses[0])
		if !ok || in.Metadata["zone"] != "z1" || in.Metadata["version"] != "1.2" || in.Weight != 3 || st.Addresses[0].Addr != "127.0.0.1:7001" {
			return fmt.Errorf("instance %+v (%v)", in, ok)
		}
		return nil
	})
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "no instances reported", func() error {
		if _, err := cc.get(); !errors.Is(err, discovery.ErrNoInstances) {
			return fmt.Errorf("reported %v, want ErrNoInstances", err)
		}
		return nil
	})
	bad, _ := url.Parse("concord:///a/b")
	if _, err := b.Build(resolver.Target{URL: *bad}, cc, resolver.BuildOptions{}); err == nil {
		t.Fatal("Build accepted service a/b")
	}
	res.Close() // twice: safe
}
