package bench

import (
	"context"
	"errors"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// floorKey is the floor's key (under the prefix).
const floorKey = "floor"

// floor measures the least a handoff can cost on this cluster: one put on
// one connection and its watch event on another, one round at a time, for
// half the duration (at least 500 ms, at most 3 s).
func (r *run) floor(ctx context.Context) (Measurement, error) {
	pub, err := r.conn(0)
	if err != nil {
		return Measurement{}, err
	}
	sub, err := r.conn(1)
	if err != nil {
		return Measurement{}, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := sub.Watch(wctx, floorKey, clientv3.WithCreatedNotify())
	if wr, ok := <-wch; !ok || !wr.Created {
		if ctx.Err() != nil {
			return Measurement{}, ctx.Err()
		}
		return Measurement{}, errors.New("floor: watch not created")
	}
	var s sampler
	bound := min(max(r.cfg.Duration/2, 500*time.Millisecond), 3*time.Second)
	elapsed, st, err := r.phase(ctx, "floor", "put_event", &s, bound, 1, func(ctx context.Context, _ int) error {
		for i := 0; ctx.Err() == nil; i++ {
			start := time.Now()
			if _, err := pub.Put(ctx, floorKey, strconv.Itoa(i)); err != nil {
				return err
			}
			if err := awaitEvent(ctx, wch); err != nil {
				return err
			}
			s.add(time.Since(start))
		}
		return nil
	})
	m := measurement("put_event", &s, elapsed, st)
	m.P50ToFloor = 1
	return m, err
}

// awaitEvent waits for a watch response with events.
func awaitEvent(ctx context.Context, wch clientv3.WatchChan) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok {
				return errors.New("floor: watch ended")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			if len(wr.Events) > 0 {
				return nil
			}
		}
	}
}
