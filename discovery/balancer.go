package discovery

import (
	"fmt"
	"math/rand/v2"
	"sort"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
)

// Load-balancing policy names for ServiceConfig.
const (
	// RoundRobin is gRPC's built-in round robin.
	RoundRobin = "round_robin"
	// Random picks a ready backend uniformly at random.
	Random = "concord_random"
	// WeightedRandom picks a ready backend at random in proportion to its
	// instance's weight (Instance.EffectiveWeight).
	WeightedRandom = "concord_weighted_random"
)

// gRPC wants balancers registered at init time, before any ClientConn is
// made: this is the package's only global state.
func init() {
	balancer.Register(base.NewBalancerBuilder(Random, randomPickerBuilder{}, base.Config{HealthCheck: true}))
	balancer.Register(base.NewBalancerBuilder(WeightedRandom, randomPickerBuilder{weighted: true}, base.Config{HealthCheck: true}))
}

// ServiceConfig returns a gRPC service config selecting policy (RoundRobin,
// Random or WeightedRandom), for grpc.WithDefaultServiceConfig.
func ServiceConfig(policy string) string {
	return fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, policy)
}

type randomPickerBuilder struct{ weighted bool }

func (b randomPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	p := &randomPicker{}
	for sc, sci := range info.ReadySCs {
		w := 1
		if in, ok := InstanceFromAddress(sci.Address); ok && b.weighted {
			w = in.EffectiveWeight()
		}
		p.total += w
		p.scs = append(p.scs, sc)
		p.cum = append(p.cum, p.total)
	}
	return p
}

// randomPicker picks SubConn i with probability (cum[i]-cum[i-1])/total.
type randomPicker struct {
	scs   []balancer.SubConn
	cum   []int
	total int
}

func (p *randomPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	n := rand.IntN(p.total)
	i := sort.SearchInts(p.cum, n+1)
	return balancer.PickResult{SubConn: p.scs[i]}, nil
}
