package discovery

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// Scheme is the gRPC target scheme of the resolver: "concord:///service".
const Scheme = "concord"

// NewResolverBuilder returns a gRPC resolver builder for targets
// "concord:///service". Pass it to grpc.NewClient with grpc.WithResolvers:
// each ClientConn then follows the service's live instances through a
// Watcher of its own. Draining instances are left out. Each address carries
// its Instance (metadata, weight) as attributes: see InstanceFromAddress.
// While the Watcher is stale the last known addresses stay in use.
func NewResolverBuilder(client *clientv3.Client, opts ...WatchOption) resolver.Builder {
	return &resolverBuilder{client: client, opts: opts}
}

type resolverBuilder struct {
	client *clientv3.Client
	opts   []WatchOption
}

func (b *resolverBuilder) Scheme() string { return Scheme }

func (b *resolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.TrimPrefix(target.Endpoint(), "/")
	w, err := NewWatcher(b.client, service, b.opts...)
	if err != nil {
		return nil, fmt.Errorf("discovery: target %q: %w", target.URL.String(), err)
	}
	r := &grpcResolver{w: w, cc: cc, stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r, nil
}

// grpcResolver pushes a Watcher's instances to a ClientConn.
type grpcResolver struct {
	w         *Watcher
	cc        resolver.ClientConn
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	last      []Instance
	pushed    bool
}

func (r *grpcResolver) run() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case <-r.w.Changes():
			r.push()
		}
	}
}

func (r *grpcResolver) push() {
	select {
	case <-r.w.Synced():
	default:
		return
	}
	var live []Instance
	for _, in := range r.w.Instances() {
		if !in.Draining {
			live = append(live, in)
		}
	}
	if r.pushed && slices.EqualFunc(live, r.last, Instance.Equal) {
		return // only the staleness changed
	}
	r.last, r.pushed = live, true
	if len(live) == 0 {
		r.cc.ReportError(fmt.Errorf("%w: service %q", ErrNoInstances, r.w.Service()))
		return
	}
	addrs := make([]resolver.Address, len(live))
	for i, in := range live {
		attr := attributes.New(attrKey{}, instanceAttr{in})
		// Attributes reach SubConn-level code and base balancers;
		// BalancerAttributes become the Endpoint's attributes for
		// endpoint-based policies (round_robin). A metadata change gives
		// the address new attributes, and gRPC a new SubConn for it.
		addrs[i] = resolver.Address{Addr: in.Addr, Attributes: attr, BalancerAttributes: attr}
	}
	// An error here is gRPC's (a balancer rejecting an empty list); it
	// asks again with ResolveNow, and the next change updates it anyway.
	_ = r.cc.UpdateState(resolver.State{Addresses: addrs})
}

func (r *grpcResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *grpcResolver) Close() {
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.done
		_ = r.w.Close(context.Background())
	})
}

type attrKey struct{}

// instanceAttr wraps an Instance for gRPC attributes, which compare values
// with an Equal method (an Instance holds a map, which == cannot compare).
type instanceAttr struct{ in Instance }

func (a instanceAttr) Equal(o any) bool {
	b, ok := o.(instanceAttr)
	return ok && a.in.Equal(b.in)
}

// InstanceFromAddress returns the Instance a resolver address was made
// from, looking at its Attributes and then its BalancerAttributes.
func InstanceFromAddress(a resolver.Address) (Instance, bool) {
	if in, ok := instanceFrom(a.Attributes); ok {
		return in, true
	}
	return instanceFrom(a.BalancerAttributes)
}

// InstanceFromEndpoint returns the Instance a resolver endpoint was made
// from.
func InstanceFromEndpoint(e resolver.Endpoint) (Instance, bool) {
	if in, ok := instanceFrom(e.Attributes); ok {
		return in, true
	}
	for _, a := range e.Addresses {
		if in, ok := InstanceFromAddress(a); ok {
			return in, true
		}
	}
	return Instance{}, false
}

func instanceFrom(a *attributes.Attributes) (Instance, bool) {
	if a == nil {
		return Instance{}, false
	}
	v, ok := a.Value(attrKey{}).(instanceAttr)
	if !ok {
		return Instance{}, false
	}
	return v.in.clone(), true
}
