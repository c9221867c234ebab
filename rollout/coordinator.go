package rollout

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/concordkit/concord/barrier"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/retry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Coordinator owns a rollout's plan while it is elected (package election):
// it opens each wave once every target of the previous one is done or
// failed, pauses the rollout when failures exceed the budget, and marks it
// done. Run any number of coordinators; one leads at a time, and a crashed
// leader is replaced within its session's TTL. Every write it makes is
// guarded by its term, so a deposed coordinator changes nothing, and opening
// a wave compares the open wave, so no wave is opened twice. A Coordinator
// is safe for concurrent use, though one value is meant for one Run.
type Coordinator struct {
	client *clientv3.Client
	k      keys
	cfg    config

	mu     sync.Mutex
	result error
}

// WithOnTerm has a Coordinator call f when it takes office (inOffice true,
// with its term's fencing token) and when it stops coordinating (inOffice
// false): its term was lost, its Run is ending, or the rollout ended. The
// second call comes before the coordinator steps down, so a coordinator
// that hands over by stepping down (at the end of the rollout, or when its
// Run ends) has made it before the next one takes office; a coordinator
// whose term is lost makes it once it has stopped, which may be after the
// next one took office (its writes, guarded by its term, fail meanwhile).
// f must not block. Workers ignore it.
func WithOnTerm(f func(token concurrency.Token, inOffice bool)) Option {
	return optionFunc(func(c *config) { c.onTerm = f })
}

// NewCoordinator returns a coordinator candidate of rollout name. It makes
// no request.
func NewCoordinator(client *clientv3.Client, name string, opts ...Option) (*Coordinator, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	return &Coordinator{client: client, k: keysOf(name), cfg: newConfig(opts)}, nil
}

// Run campaigns and coordinates while elected, until the rollout is done
// (nil), aborted (ErrAborted) or ctx ends (ctx.Err()).
func (c *Coordinator) Run(ctx context.Context) error {
	rctx, finish := context.WithCancel(ctx)
	defer finish()
	el, err := election.NewElector(c.client, election.Config{
		Name:  c.k.prefix + "coordinator",
		Value: c.cfg.value,
		OnElected: func(tctx context.Context, term *election.Leadership) {
			if f := c.cfg.onTerm; f != nil {
				f(term.Token(), true)
				defer f(term.Token(), false)
			}
			if err := c.lead(tctx, term); err != nil && tctx.Err() == nil {
				c.mu.Lock()
				c.result = err
				c.mu.Unlock()
				finish()
			}
		},
		SessionOptions: c.cfg.session,
		Logger:         c.cfg.logger,
	})
	if err != nil {
		return err
	}
	err = el.Run(rctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case errors.Is(c.result, errFinished):
		return nil
	case c.result != nil:
		return c.result
	}
	return err
}

// lead coordinates for one term; it returns errFinished or ErrAborted when
// the rollout has ended, else when the term ends.
func (c *Coordinator) lead(ctx context.Context, term *election.Leadership) error {
	pause := retry.Write.UpTo(2 * time.Second).New()
	for ctx.Err() == nil {
		v, err := read(ctx, c.client, c.k)
		if err == nil {
			var ended error
			ended, err = c.step(ctx, term.Guard(), v)
			if ended != nil {
				return ended
			}
		}
		if err == nil {
			err = waitChange(ctx, c.client, c.k, v.rev)
		}
		if err != nil && ctx.Err() == nil {
			c.cfg.logger.Warn("concord rollout coordinator", "rollout", c.k.name, "err", err)
			retry.Sleep(ctx, pause.NextBackOff())
			continue
		}
		pause.Reset()
	}
	return nil
}

// step makes the one move the view calls for, if any.
func (c *Coordinator) step(ctx context.Context, guard concurrency.Guard, v *view) (ended, err error) {
	switch v.state.State {
	case Done:
		return errFinished, nil
	case Aborted:
		return ErrAborted, nil
	case Paused:
		return nil, nil
	}
	if err := enforceBudget(ctx, c.client, c.k); err != nil {
		return nil, err
	}
	if pending, _, _ := v.waveCounts(v.wave); pending > 0 {
		return nil, nil
	}
	waves := v.plan.Waves()
	if v.wave+1 < len(waves) {
		// Open the next wave: once, and only while this term holds.
		next := v.wave + 1
		_, err := guard.Txn(ctx, clientv3.Compare(clientv3.Value(c.k.wave()), "=", strconv.Itoa(v.wave))).
			Then(clientv3.OpPut(c.k.wave(), strconv.Itoa(next)), clientv3.OpDelete(barrier.Key(c.k.gate(next)))).
			Commit()
		if err == nil {
			c.cfg.logger.Info("concord rollout wave opened", "rollout", c.k.name, "wave", next)
		}
		return nil, err
	}
	// Every wave has ended.
	resp, err := guard.Txn(ctx, clientv3.Compare(clientv3.ModRevision(c.k.state()), "<", v.rev+1)).
		Then(clientv3.OpPut(c.k.state(), mustJSON(stateRecord{State: Done}))).Commit()
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		return errFinished, nil
	}
	return nil, nil
}
