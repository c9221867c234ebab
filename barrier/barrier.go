package barrier

import (
	"context"
	"fmt"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/watch"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Option configures a Barrier or a DoubleBarrier.
type Option interface{ apply(*config) }

type config struct {
	guard *concurrency.Guard
	value string
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithGuard makes a Barrier's Hold and Release land only while g holds (a
// leadership's or a lock's Guard): a deposed coordinator cannot hold or
// release the barrier. They return ErrNotHeld and change nothing
// otherwise. It has no effect on a DoubleBarrier.
func WithGuard(g concurrency.Guard) Option {
	return optionFunc(func(c *config) { c.guard = &g })
}

// WithValue stores v with a DoubleBarrier participant's key, so the others
// can name it (in a LostError). It has no effect on a Barrier.
func WithValue(v string) Option { return optionFunc(func(c *config) { c.value = v }) }

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	return c
}

// Barrier is a gate: Hold closes it, Release opens it, and Wait blocks while
// it is closed. The barrier is one key in etcd, held without a lease: it
// stays closed when the process that held it dies, until someone releases
// it (a coordinator's successor). A Barrier is a value that holds nothing
// itself and is safe for concurrent use.
type Barrier struct {
	client *clientv3.Client
	key    string
	guard  *concurrency.Guard
}

// Key is the etcd key of the barrier name: it exists while the barrier is
// held.
func Key(name string) string { return name + "/.barrier" }

// New returns the barrier name. It checks its input and makes no request.
func New(client *clientv3.Client, name string, opts ...Option) (*Barrier, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	c := newConfig(opts)
	return &Barrier{client: client, key: Key(name), guard: c.guard}, nil
}

// Hold closes the barrier: Wait blocks from now until Release. Holding a
// held barrier changes nothing. With WithGuard, it returns ErrNotHeld when
// the guard no longer holds.
func (b *Barrier) Hold(ctx context.Context) error {
	return b.write(ctx, clientv3.OpPut(b.key, ""), clientv3.Compare(clientv3.CreateRevision(b.key), "=", 0))
}

// Release opens the barrier, waking every waiter. Releasing an open barrier
// changes nothing. With WithGuard, it returns ErrNotHeld when the guard no
// longer holds.
func (b *Barrier) Release(ctx context.Context) error {
	return b.write(ctx, clientv3.OpDelete(b.key), clientv3.Compare(clientv3.CreateRevision(b.key), ">", 0))
}

// write commits op if cmp holds (the barrier is not already as op makes
// it), under the guard if any.
func (b *Barrier) write(ctx context.Context, op clientv3.Op, cmp clientv3.Cmp) error {
	if b.guard == nil {
		_, err := b.client.Txn(ctx).If(cmp).Then(op).Commit()
		return err
	}
	// The guard alone decides; the barrier's own state only saves a write.
	resp, err := b.guard.Txn(ctx, cmp).Then(op).Else(clientv3.OpTxn(b.guard.Cmps(), nil, nil)).Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded || resp.Responses[0].GetResponseTxn().Succeeded {
		return nil
	}
	return fmt.Errorf("%w: barrier %s (guard %s, token %d)", ErrNotHeld, b.key, fence.Guard(*b.guard).Key(), b.guard.Token())
}

// IsHeld reports whether the barrier is held now.
func (b *Barrier) IsHeld(ctx context.Context) (bool, error) {
	resp, err := b.client.Get(ctx, b.key, clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

// Wait returns nil at once if the barrier is not held, else blocks until it
// is released or ctx ends (ctx.Err()). Every waiter wakes on the release's
// watch event, within milliseconds; its watch is opened without a start
// revision, so the server serves it at once. A release while the waiter's
// connection is broken is seen when the watch resumes, unless it was
// compacted away and the barrier held again meanwhile.
func (b *Barrier) Wait(ctx context.Context) error {
	resp, err := b.client.Get(ctx, b.key, clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if resp.Count == 0 {
		return nil
	}
	read := func(ctx context.Context) (int64, bool, error) {
		resp, err := b.client.Get(ctx, b.key, clientv3.WithCountOnly())
		switch {
		case err != nil && ctx.Err() != nil:
			return 0, false, ctx.Err()
		case err != nil:
			return 0, false, nil // try again
		}
		return resp.Header.Revision, resp.Count == 0, nil
	}
	handle := func(evs []*clientv3.Event) (bool, error) {
		for _, ev := range evs {
			if ev.Type == clientv3.EventTypeDelete {
				return true, nil
			}
		}
		return false, nil
	}
	return watch.Until(ctx, b.client, b.key, []clientv3.OpOption{clientv3.WithFilterPut()}, resp.Header.Revision, false, read, handle)
}
