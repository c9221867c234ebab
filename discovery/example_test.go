package discovery_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

func Example() {
	srv, err := embedtest.New() // or clientv3.New with your cluster's endpoints
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	// One Registry per process: one lease for all its instances.
	reg, err := discovery.NewRegistry(srv.Client)
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close(ctx)
	if _, err := reg.Register(ctx, "payments", discovery.Instance{
		ID: "p1", Addr: "127.0.0.1:7001", Metadata: map[string]string{"zone": "eu-1"},
	}); err != nil {
		log.Fatal(err)
	}
	p2, err := reg.Register(ctx, "payments", discovery.Instance{ID: "p2", Addr: "127.0.0.1:7002"})
	if err != nil {
		log.Fatal(err)
	}

	w, err := discovery.NewWatcher(srv.Client, "payments")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close(context.Background())
	<-w.Synced()
	for _, in := range w.Instances() {
		fmt.Println(in.ID, in.Addr, in.Metadata)
	}

	if err := p2.Deregister(ctx); err != nil {
		log.Fatal(err)
	}
	for len(w.Instances()) != 1 {
		<-w.Changes()
	}
	fmt.Println("after deregister:", len(w.Instances()), "instance")
	// Output:
	// p1 127.0.0.1:7001 map[zone:eu-1]
	// p2 127.0.0.1:7002 map[]
	// after deregister: 1 instance
}

func ExampleNewResolverBuilder() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	// A gRPC server (here: the standard health service) registers itself.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis)
	defer gs.Stop()
	g, err := discovery.Register(ctx, srv.Client, "health", discovery.Instance{ID: "h1", Addr: lis.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	defer g.Deregister(ctx)

	// A client finds it through the resolver.
	conn, err := grpc.NewClient("concord:///health",
		grpc.WithResolvers(discovery.NewResolverBuilder(srv.Client)),
		grpc.WithDefaultServiceConfig(discovery.ServiceConfig(discovery.WeightedRandom)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}
