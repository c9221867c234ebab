// Command grpc shows gRPC service discovery with concord's discovery
// package: three gRPC servers (grpc-go's standard health service) register
// themselves with a zone and a weight, and a client dials
// "concord:///backend" through discovery's resolver, first with round robin,
// then with weighted random. One backend then crashes: gRPC stops using it
// at once and its record expires with its lease (TTL 2s). Another is marked
// draining: it stays registered but gets no new calls. With ETCD_ENDPOINTS
// unset it runs an embedded etcd.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

const (
	service = "backend"
	ttl     = 2 * time.Second // etcd's minimum lease TTL
	// weightedCalls is how many calls the weighted random client makes.
	weightedCalls = 60
)

func main() {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	if err := runTo(context.Background(), say); err != nil {
		log.Fatal(err)
	}
}

// backend is one server process: a gRPC server and, like any process of
// its own, its own etcd client and Registry (lease).
type backend struct {
	inst   discovery.Instance
	gs     *grpc.Server
	served chan struct{} // closed when Serve has returned
	etcd   *clientv3.Client
	reg    *discovery.Registry
	g      *discovery.Registration
}

func startBackend(ctx context.Context, endpoints []string, id, zone string, weight int) (*backend, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{gs: grpc.NewServer(), served: make(chan struct{})}
	healthpb.RegisterHealthServer(b.gs, health.NewServer())
	go func() {
		defer close(b.served)
		_ = b.gs.Serve(lis)
	}()
	b.etcd, err = clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		b.reg, err = discovery.NewRegistry(b.etcd, discovery.WithTTL(ttl))
	}
	if err == nil {
		b.inst = discovery.Instance{
			ID: id, Addr: lis.Addr().String(), Weight: weight,
			Metadata: map[string]string{"zone": zone},
		}
		b.g, err = b.reg.Register(ctx, service, b.inst)
	}
	if err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// stop shuts the backend down; after crash it only tidies up.
func (b *backend) stop() {
	if b.reg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = b.reg.Close(ctx) // revokes the lease: the record goes at once
		cancel()
	}
	if b.etcd != nil {
		_ = b.etcd.Close()
	}
	b.gs.Stop()
	<-b.served
}

// crash kills the backend as a dying process would: the server stops and
// its etcd connection is gone, so nothing deregisters it and its lease
// runs out.
func (b *backend) crash() {
	b.gs.Stop()
	<-b.served
	_ = b.etcd.Close()
}

func runTo(ctx context.Context, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, closeFn, err := embedtest.Connect()
	if err != nil {
		return err
	}
	defer closeFn()

	// Three backends register themselves: ID, address, zone, weight.
	var backends []*backend
	defer func() {
		for _, b := range backends {
			b.stop()
		}
	}()
	byAddr := map[string]string{}
	for i, spec := range []struct {
		zone   string
		weight int
	}{{"eu-1", 1}, {"eu-2", 1}, {"eu-1", 4}} {
		b, err := startBackend(ctx, c.Endpoints(), fmt.Sprintf("backend-%d", i+1), spec.zone, spec.weight)
		if err != nil {
			return err
		}
		backends = append(backends, b)
		byAddr[b.inst.Addr] = b.inst.ID
		say("%s serving on %s, registered (zone %s, weight %d)", b.inst.ID, b.inst.Addr, spec.zone, spec.weight)
	}
	b2, b3 := backends[1], backends[2]

	// A watcher shows what discovery lists; each ClientConn has its own.
	w, err := discovery.NewWatcher(c, service)
	if err != nil {
		return err
	}
	defer w.Close(context.Background())
	if err := waitFor(ctx, w, func(in []discovery.Instance) bool { return len(in) == 3 }); err != nil {
		return err
	}
	say("discovery lists %s", list(w.Instances()))

	dial := func(policy string) (*grpc.ClientConn, error) {
		return grpc.NewClient(discovery.Scheme+":///"+service,
			grpc.WithResolvers(discovery.NewResolverBuilder(c)),
			grpc.WithDefaultServiceConfig(discovery.ServiceConfig(policy)),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	// call makes one Check and returns the ID of the backend that served it.
	call := func(conn *grpc.ClientConn) (string, error) {
		var p peer.Peer
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{},
			grpc.Peer(&p), grpc.WaitForReady(true))
		if err != nil {
			return "", err
		}
		return byAddr[p.Addr.String()], nil
	}
	calls := func(conn *grpc.ClientConn, n int) ([]string, error) {
		var got []string
		for range n {
			id, err := call(conn)
			if err != nil {
				return nil, err
			}
			got = append(got, id)
		}
		return got, nil
	}
	// settle calls until every backend in want has served a call and ten
	// calls in a row went to none of avoid: the client's balancer then
	// uses exactly the backends we expect.
	settle := func(conn *grpc.ClientConn, want []string, avoid ...string) error {
		seen := map[string]bool{}
		clean := 0
		var err error
		for range 1000 {
			var id string
			if id, err = call(conn); err != nil {
				clean = 0 // a call that raced a crash: try again
				continue
			}
			seen[id] = true
			if slices.Contains(avoid, id) {
				clean = 0
			} else {
				clean++
			}
			if clean >= 10 && !slices.ContainsFunc(want, func(id string) bool { return !seen[id] }) {
				return nil
			}
		}
		return fmt.Errorf("balancer did not settle (last error: %v)", err)
	}

	// Round robin: once every backend is connected, calls take turns.
	rr, err := dial(discovery.RoundRobin)
	if err != nil {
		return err
	}
	defer rr.Close()
	all := []string{"backend-1", "backend-2", "backend-3"}
	if err := settle(rr, all); err != nil {
		return err
	}
	got, err := calls(rr, 6)
	if err != nil {
		return err
	}
	say("round robin, 6 calls: %s", strings.Join(got, " "))

	// Weighted random: backend-3 (weight 4) gets about 4 calls in 6.
	wr, err := dial(discovery.WeightedRandom)
	if err != nil {
		return err
	}
	defer wr.Close()
	if err := settle(wr, all); err != nil {
		return err
	}
	got, err = calls(wr, weightedCalls)
	if err != nil {
		return err
	}
	say("weighted random, %d calls: %s", weightedCalls, counts(got, all))
	_ = wr.Close()

	// Crash: backend-3's server dies with its etcd connection. Its
	// connections fail, so gRPC stops picking it at once; nothing
	// deregisters it, but its lease expires within the TTL and every
	// watcher, and so every client, drops it.
	say("%s crashes (no deregister)", b3.inst.ID)
	crashed := time.Now()
	b3.crash()
	if err := settle(rr, all[:2], b3.inst.ID); err != nil {
		return err
	}
	got, err = calls(rr, 6)
	if err != nil {
		return err
	}
	say("round robin, 6 calls: %s (discovery still lists %d instances)", strings.Join(got, " "), len(w.Instances()))
	if err := waitFor(ctx, w, func(in []discovery.Instance) bool { return len(in) == 2 }); err != nil {
		return err
	}
	say("%s's lease expired after %.1fs; discovery lists %s",
		b3.inst.ID, time.Since(crashed).Seconds(), list(w.Instances()))
	if err := settle(rr, all[:2], b3.inst.ID); err != nil {
		return err
	}
	got, err = calls(rr, 6)
	if err != nil {
		return err
	}
	say("round robin, 6 calls: %s", strings.Join(got, " "))

	// Draining: backend-2 stays registered (and serving the calls it has),
	// but the resolver hands it no new calls.
	drain := b2.inst
	drain.Draining = true
	if err := b2.g.Update(ctx, drain); err != nil {
		return err
	}
	if err := waitFor(ctx, w, func(in []discovery.Instance) bool {
		return slices.ContainsFunc(in, func(i discovery.Instance) bool { return i.Draining })
	}); err != nil {
		return err
	}
	say("%s marked draining; discovery lists %s", b2.inst.ID, list(w.Instances()))
	if err := settle(rr, all[:1], b2.inst.ID); err != nil {
		return err
	}
	got, err = calls(rr, 6)
	if err != nil {
		return err
	}
	say("round robin, 6 calls: %s", strings.Join(got, " "))

	// Once drained, backend-2 deregisters and stops.
	if err := b2.g.Deregister(ctx); err != nil {
		return err
	}
	if err := waitFor(ctx, w, func(in []discovery.Instance) bool { return len(in) == 1 }); err != nil {
		return err
	}
	b2.gs.GracefulStop()
	say("%s deregistered and stopped; discovery lists %s", b2.inst.ID, list(w.Instances()))
	return nil
}

// waitFor waits until ok holds for the watcher's instances.
func waitFor(ctx context.Context, w *discovery.Watcher, ok func([]discovery.Instance) bool) error {
	for {
		select {
		case <-w.Synced():
			if ok(w.Instances()) {
				return nil
			}
		default:
		}
		select {
		case <-w.Changes():
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", w.Service(), ctx.Err())
		}
	}
}

// list formats instances as "backend-1 (eu-1), backend-2 (eu-2, draining)".
func list(ins []discovery.Instance) string {
	var s []string
	for _, in := range ins {
		extra := ""
		if in.Draining {
			extra = ", draining"
		}
		s = append(s, fmt.Sprintf("%s (%s%s)", in.ID, in.Metadata["zone"], extra))
	}
	return strings.Join(s, ", ")
}

// counts formats how many calls each backend served: "backend-1 x9, ...".
func counts(got, ids []string) string {
	var s []string
	for _, id := range ids {
		n := 0
		for _, g := range got {
			if g == id {
				n++
			}
		}
		s = append(s, fmt.Sprintf("%s x%d", id, n))
	}
	return strings.Join(s, ", ")
}
