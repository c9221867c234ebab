package bench

import (
	"context"
	"errors"
	"time"

	"github.com/concordkit/concord/queue"
)

const queueName = "queue"

// queuePayload is each item's payload.
var queuePayload = []byte("concord bench item")

// queue: the contenders enqueue for a third of the duration, then as many
// consumers claim and acknowledge the items until the queue is drained or
// the duration is over.
func (r *run) queue(ctx context.Context) (Workload, error) {
	n := r.cfg.Contenders
	w := Workload{Name: "queue", Contenders: n, Measurements: []Measurement{}}
	qs := make([]*queue.Queue, n)
	for i := range n {
		c, err := r.conn(i)
		if err != nil {
			return w, err
		}
		if qs[i], err = queue.New(c, queueName); err != nil {
			return w, err
		}
	}
	var enq sampler
	elapsed, st, err := r.phase(ctx, "queue", "enqueue", &enq, r.cfg.Duration/3, n, func(ctx context.Context, i int) error {
		for ctx.Err() == nil {
			start := time.Now()
			if _, err := qs[i].Enqueue(ctx, queuePayload); err != nil {
				return err
			}
			enq.add(time.Since(start))
		}
		return nil
	})
	w.Measurements = append(w.Measurements, measurement("enqueue", &enq, elapsed, st))
	if err != nil {
		return w, err
	}
	ss, err := r.sessions(ctx, n)
	if err != nil {
		return w, err
	}
	defer closeSessions(ctx, ss)
	cs := make([]*queue.Consumer, n)
	for i, s := range ss {
		cs[i] = qs[i].Consumer(s)
	}
	var claims sampler
	elapsed, st, err = r.phase(ctx, "queue", "claim_ack", &claims, r.cfg.Duration-elapsed, n, func(ctx context.Context, i int) error {
		return drain(ctx, cs[i], &claims)
	})
	w.Measurements = append(w.Measurements, measurement("claim_ack", &claims, elapsed, st))
	return w, err
}

// drain claims and acknowledges items until none is ready or ctx ends.
func drain(ctx context.Context, c *queue.Consumer, s *sampler) error {
	for ctx.Err() == nil {
		start := time.Now()
		cl, err := c.TryClaim(ctx)
		if errors.Is(err, queue.ErrEmpty) {
			return nil
		}
		if err != nil {
			return err
		}
		// Acknowledged even when the phase has just ended: a claimed item
		// is not left to its lease.
		actx, cancel := boundedAfter(ctx)
		err = cl.Ack(actx)
		cancel()
		if err != nil {
			return err
		}
		s.add(time.Since(start))
	}
	return nil
}
