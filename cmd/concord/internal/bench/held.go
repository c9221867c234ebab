package bench

import (
	"context"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/semaphore"
)

// Names of the resources the workloads use, under the prefix.
const (
	lockName     = "lock"
	semName      = "sem"
	electionName = "election"
)

// sessions opens n sessions, one per contender, spread over the
// connections. On error it closes those it opened.
func (r *run) sessions(ctx context.Context, n int) ([]*concurrency.Session, error) {
	ss := make([]*concurrency.Session, 0, n)
	for i := range n {
		s, err := r.session(ctx, i)
		if err != nil {
			closeSessions(ctx, ss)
			return nil, err
		}
		ss = append(ss, s)
	}
	return ss, nil
}

// holdLoop is one contender's loop: acquire, note the handoff's latency,
// release, again, until ctx ends.
func holdLoop(ctx context.Context, s *sampler, h *handoff, acquire func(context.Context) (release func(context.Context) error, err error)) error {
	for ctx.Err() == nil {
		asked := time.Now()
		release, err := acquire(ctx)
		if err != nil {
			return err
		}
		s.add(h.latency(asked, time.Now()))
		h.release(time.Now())
		// Released even when the phase has just ended: nothing stays held.
		rctx, cancel := boundedAfter(ctx)
		err = release(rctx)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// lock: the contenders take one lock in turn; each grant is a handoff.
func (r *run) lock(ctx context.Context) (Workload, error) {
	n := r.cfg.Contenders
	w := Workload{Name: "lock", Contenders: n, Measurements: []Measurement{}}
	ss, err := r.sessions(ctx, n)
	if err != nil {
		return w, err
	}
	defer closeSessions(ctx, ss)
	ms := make([]*lock.Mutex, n)
	for i, s := range ss {
		if ms[i], err = lock.NewMutex(s, lockName); err != nil {
			return w, err
		}
	}
	var s sampler
	var h handoff
	elapsed, st, err := r.phase(ctx, "lock", "handoff", &s, r.cfg.Duration, n, func(ctx context.Context, i int) error {
		return holdLoop(ctx, &s, &h, func(ctx context.Context) (func(context.Context) error, error) {
			return ms[i].Unlock, ms[i].Lock(ctx)
		})
	})
	w.Measurements = append(w.Measurements, measurement("handoff", &s, elapsed, st))
	return w, err
}

// semLimit is the semaphore's limit for n contenders.
func semLimit(n int) int { return max(1, n/4) }

// sem: the contenders take permits of one semaphore of limit
// max(1, contenders/4); each grant is timed from the release that let it
// in (the latest release before it).
func (r *run) sem(ctx context.Context) (Workload, error) {
	n, limit := r.cfg.Contenders, semLimit(r.cfg.Contenders)
	w := Workload{Name: "sem", Contenders: n, Limit: limit, Measurements: []Measurement{}}
	ss, err := r.sessions(ctx, n)
	if err != nil {
		return w, err
	}
	defer closeSessions(ctx, ss)
	sems := make([]*semaphore.Semaphore, 0, n)
	defer func() {
		cctx, cancel := boundedAfter(ctx)
		defer cancel()
		for _, sem := range sems {
			_ = sem.Close(cctx)
		}
	}()
	for _, s := range ss {
		sem, err := semaphore.New(s, semName, limit)
		if err != nil {
			return w, err
		}
		sems = append(sems, sem)
	}
	var s sampler
	var h handoff
	elapsed, st, err := r.phase(ctx, "sem", "grant", &s, r.cfg.Duration, n, func(ctx context.Context, i int) error {
		return holdLoop(ctx, &s, &h, func(ctx context.Context) (func(context.Context) error, error) {
			p, err := sems[i].Acquire(ctx)
			if err != nil {
				return nil, err
			}
			return p.Release, nil
		})
	})
	w.Measurements = append(w.Measurements, measurement("grant", &s, elapsed, st))
	return w, err
}

// election: the leader resigns at once and the candidate next in line
// takes office; each term taken is a failover, timed from the resignation.
func (r *run) election(ctx context.Context) (Workload, error) {
	n := r.cfg.Contenders
	w := Workload{Name: "election", Contenders: n, Measurements: []Measurement{}}
	ss, err := r.sessions(ctx, n)
	if err != nil {
		return w, err
	}
	defer closeSessions(ctx, ss)
	es := make([]*election.Election, n)
	for i, s := range ss {
		if es[i], err = election.New(s, electionName); err != nil {
			return w, err
		}
	}
	var s sampler
	var h handoff
	elapsed, st, err := r.phase(ctx, "election", "failover", &s, r.cfg.Duration, n, func(ctx context.Context, i int) error {
		return holdLoop(ctx, &s, &h, func(ctx context.Context) (func(context.Context) error, error) {
			l, err := es[i].Campaign(ctx, "candidate")
			if err != nil {
				return nil, err
			}
			return l.Resign, nil
		})
	})
	w.Measurements = append(w.Measurements, measurement("failover", &s, elapsed, st))
	return w, err
}
