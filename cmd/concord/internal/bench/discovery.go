package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	serviceName = "bench-svc"
	// registries is how many Registries share the instances, each on a
	// connection of its own, as a few processes of a fleet would.
	registries = 4
	// registerWorkers are the concurrent Register calls per Registry.
	registerWorkers = 4
)

// discovery: instances registered across a few Registries (for half the
// duration at most), watcher caches (one per contender) loading them again
// and again (a quarter), then one instance updated again and again, each
// update timed until every watcher has it (the rest).
func (r *run) discovery(ctx context.Context) (Workload, error) {
	n, began := r.cfg.Contenders, time.Now()
	w := Workload{Name: "discovery", Contenders: n, Watchers: n, Measurements: []Measurement{}}
	regs := make([]*discovery.Registry, 0, registries)
	defer func() {
		cctx, cancel := boundedAfter(ctx)
		defer cancel()
		for _, reg := range regs {
			r.noteLease(reg.Lease())
			_ = reg.Close(cctx)
		}
	}()
	for i := range registries {
		c, err := r.conn(i)
		if err != nil {
			return w, err
		}
		reg, err := discovery.NewRegistry(c)
		if err != nil {
			return w, err
		}
		regs = append(regs, reg)
	}
	first := make(chan *discovery.Registration, 1)
	var next atomic.Int64
	var reg sampler
	elapsed, st, err := r.phase(ctx, "discovery", "register", &reg, r.cfg.Duration/2, registries*registerWorkers, func(ctx context.Context, i int) error {
		for ctx.Err() == nil {
			k := next.Add(1) - 1
			if k >= int64(r.cfg.Instances) {
				return nil
			}
			start := time.Now()
			g, err := regs[i%registries].Register(ctx, serviceName, benchInstance(k))
			if err != nil {
				return err
			}
			reg.add(time.Since(start))
			if k == 0 {
				first <- g
			}
		}
		return nil
	})
	w.Instances = int(reg.count.Load())
	w.Measurements = append(w.Measurements, measurement("register", &reg, elapsed, st))
	if err != nil || w.Instances == 0 {
		return w, err
	}
	var g *discovery.Registration
	select {
	case g = <-first:
	default:
		return w, nil // the first registration did not finish in time
	}
	ws := make([]*discovery.Watcher, n)
	defer func() {
		cctx, cancel := boundedAfter(ctx)
		defer cancel()
		for _, wt := range ws {
			if wt != nil {
				_ = wt.Close(cctx)
			}
		}
	}()
	var load sampler
	elapsed, st, err = r.phase(ctx, "discovery", "snapshot_load", &load, r.cfg.Duration/4, n, func(ctx context.Context, i int) error {
		c, err := r.conn(i)
		if err != nil {
			return err
		}
		ws[i], err = loadLoop(ctx, c, &load)
		return err
	})
	w.Measurements = append(w.Measurements, measurement("snapshot_load", &load, elapsed, st))
	if err != nil {
		return w, err
	}
	var fan sampler
	bound := max(r.cfg.Duration/4, r.cfg.Duration-time.Since(began))
	elapsed, st, err = r.phase(ctx, "discovery", "fan_out", &fan, bound, 1, func(ctx context.Context, _ int) error {
		return fanOut(ctx, g, ws, &fan)
	})
	w.Measurements = append(w.Measurements, measurement("fan_out", &fan, elapsed, st))
	return w, err
}

// benchInstance is the k-th instance.
func benchInstance(k int64) discovery.Instance {
	return discovery.Instance{ID: fmt.Sprintf("i-%06d", k), Addr: fmt.Sprintf("10.%d.%d.%d:8080", k>>16&255, k>>8&255, k&255),
		Metadata: map[string]string{"zone": "z" + strconv.FormatInt(k%3, 10)}}
}

// loadLoop opens a watcher and times its first snapshot, again and again
// until ctx ends; it returns the last watcher that loaded, still open.
func loadLoop(ctx context.Context, c *clientv3.Client, s *sampler) (*discovery.Watcher, error) {
	var kept *discovery.Watcher
	for ctx.Err() == nil {
		start := time.Now()
		wt, err := discovery.NewWatcher(c, serviceName)
		if err != nil {
			return kept, err
		}
		select {
		case <-wt.Synced():
			s.add(time.Since(start))
			if kept != nil {
				closeWatcher(ctx, kept)
			}
			kept = wt
		case <-ctx.Done():
			closeWatcher(ctx, wt)
		}
	}
	return kept, nil
}

// fanOut updates g's metadata again and again, timing each update until
// every watcher has it, until ctx ends.
func fanOut(ctx context.Context, g *discovery.Registration, ws []*discovery.Watcher, s *sampler) error {
	inst := g.Instance()
	for v := 1; ctx.Err() == nil; v++ {
		md := map[string]string{"zone": inst.Metadata["zone"], "v": strconv.Itoa(v)}
		upd := inst
		upd.Metadata = md
		start := time.Now()
		if err := g.Update(ctx, upd); err != nil {
			return err
		}
		var wg sync.WaitGroup
		for _, wt := range ws {
			if wt != nil {
				wg.Go(func() { awaitValue(ctx, wt, inst.ID, md["v"]) })
			}
		}
		wg.Wait()
		if ctx.Err() == nil {
			s.add(time.Since(start))
		}
	}
	return nil
}

// awaitValue waits until wt's instance id has metadata v=want, or ctx
// ends. Changes holds one notification: one that comes after a look is
// not missed.
func awaitValue(ctx context.Context, wt *discovery.Watcher, id, want string) {
	for {
		if in, ok := wt.Lookup(id); ok && in.Metadata["v"] == want {
			return
		}
		select {
		case <-wt.Changes():
		case <-ctx.Done():
			return
		}
	}
}

// closeWatcher closes wt within the clean-up's bound, even after ctx ended.
func closeWatcher(ctx context.Context, wt *discovery.Watcher) {
	cctx, cancel := boundedAfter(ctx)
	defer cancel()
	_ = wt.Close(cctx)
}
