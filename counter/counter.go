package counter

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/retry"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Option configures a Counter.
type Option interface{ apply(*Counter) }

type optionFunc func(*Counter)

func (f optionFunc) apply(c *Counter) { f(c) }

// WithGuard makes every write (Add, CompareAndSwap, Set) land only while g
// holds (a lock's, a leadership's or a permit's Guard): a stale holder's
// write returns ErrNotHeld and changes nothing.
func WithGuard(g concurrency.Guard) Option {
	return optionFunc(func(c *Counter) { c.guard = &g })
}

// Value is the counter's value as of one change.
type Value struct {
	N int64
	// Revision is the etcd revision of the change that set N (0 for a
	// counter never written). Pass it to Watch to resume after it.
	Revision int64
	// Resync marks a value read afresh because the changes between the
	// previous value and this one were compacted away: they were not seen
	// one by one.
	Resync bool
}

// Counter is a shared int64 stored in one etcd key. A counter that was
// never written (or was deleted) reads as 0. Every write is one
// compare-and-swap transaction on the key's revision, so no update is lost
// or applied twice. A Counter is safe for concurrent use.
type Counter struct {
	client *clientv3.Client
	key    string
	guard  *concurrency.Guard

	mu   sync.Mutex
	last Value // the value as last seen by this Counter; a hint only
	seen bool
}

// Key is the etcd key of the counter name.
func Key(name string) string { return name + "/.counter" }

// New returns the counter name. It checks its input and makes no request.
func New(client *clientv3.Client, name string, opts ...Option) (*Counter, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	c := &Counter{client: client, key: Key(name)}
	for _, o := range opts {
		o.apply(c)
	}
	return c, nil
}

// Get reads the current value.
func (c *Counter) Get(ctx context.Context) (Value, error) {
	resp, err := c.client.Get(ctx, c.key)
	if err != nil {
		return Value{}, err
	}
	v, err := valueOf(resp.Kvs)
	if err == nil {
		c.remember(v)
	}
	return v, err
}

// Add adds delta and returns the new value. Under contention it retries
// with the value another writer just set, with backoff after repeated
// conflicts, until it lands or ctx ends.
func (c *Counter) Add(ctx context.Context, delta int64) (Value, error) {
	v, _, err := c.update(ctx, func(cur int64) (int64, bool, error) {
		if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
			return 0, false, fmt.Errorf("%w: %d + %d", ErrOverflow, cur, delta)
		}
		return cur + delta, true, nil
	})
	return v, err
}

// Set stores n, whatever the value was.
func (c *Counter) Set(ctx context.Context, n int64) (Value, error) {
	v, _, err := c.update(ctx, func(int64) (int64, bool, error) { return n, true, nil })
	return v, err
}

// CompareAndSwap sets the value to new if it is old, and reports whether it
// did; cur is the value after the call (new if swapped, else the value
// found).
func (c *Counter) CompareAndSwap(ctx context.Context, old, new int64) (cur Value, swapped bool, err error) {
	return c.update(ctx, func(v int64) (int64, bool, error) {
		if v != old {
			return 0, false, nil
		}
		return new, true, nil
	})
}

// update applies f to the current value until a write of its result lands
// on the revision it was computed from, or f declines (write false). It
// returns the value after the call and whether it wrote.
func (c *Counter) update(ctx context.Context, f func(cur int64) (next int64, write bool, err error)) (Value, bool, error) {
	cur, ok := c.hint()
	if !ok {
		v, err := c.Get(ctx)
		if err != nil {
			return Value{}, false, err
		}
		cur = v
	}
	b := retry.Conflict.New()
	for conflicts := 0; ; {
		next, write, err := f(cur.N)
		if (err != nil || !write) && ok {
			// Refused on the cached value: judge the value as it is, as a
			// compare-and-swap must not fail on a stale view.
			if cur, err = c.Get(ctx); err != nil {
				return Value{}, false, err
			}
			ok = false
			continue
		}
		if err != nil {
			return Value{}, false, err
		}
		if !write {
			return cur, false, nil
		}
		landed, now, err := c.swap(ctx, cur.Revision, next)
		if err != nil {
			return Value{}, false, err
		}
		if landed {
			return now, true, nil
		}
		cur, ok = now, false
		conflicts++
		if conflicts > 1 {
			if !retry.Sleep(ctx, b.NextBackOff()) {
				return Value{}, false, ctx.Err()
			}
		}
	}
}

// swap writes n if the key is still at revision rev (0: absent), under the
// guard if any. It returns whether it landed and the value now.
func (c *Counter) swap(ctx context.Context, rev, n int64) (bool, Value, error) {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(c.key), "=", rev)}
	els := []clientv3.Op{clientv3.OpGet(c.key)}
	if c.guard != nil {
		cmps = append(cmps, c.guard.Cmps()...)
		els = append(els, clientv3.OpTxn(c.guard.Cmps(), nil, nil))
	}
	resp, err := c.client.Txn(ctx).If(cmps...).
		Then(clientv3.OpPut(c.key, strconv.FormatInt(n, 10))).
		Else(els...).Commit()
	if err != nil {
		return false, Value{}, err
	}
	if resp.Succeeded {
		v := Value{N: n, Revision: resp.Header.Revision}
		c.remember(v)
		return true, v, nil
	}
	if c.guard != nil && !resp.Responses[1].GetResponseTxn().Succeeded {
		return false, Value{}, fmt.Errorf("%w: counter %s (guard %s, token %d)", ErrNotHeld, c.key, fence.Guard(*c.guard).Key(), c.guard.Token())
	}
	v, err := valueOf(resp.Responses[0].GetResponseRange().Kvs)
	if err != nil {
		return false, Value{}, err
	}
	c.remember(v)
	return false, v, nil
}

func valueOf(kvs []*mvccpb.KeyValue) (Value, error) {
	if len(kvs) == 0 {
		return Value{}, nil
	}
	n, err := strconv.ParseInt(string(kvs[0].Value), 10, 64)
	if err != nil {
		return Value{}, fmt.Errorf("%w: %q at revision %d", ErrNotInteger, kvs[0].Value, kvs[0].ModRevision)
	}
	return Value{N: n, Revision: kvs[0].ModRevision}, nil
}

func (c *Counter) hint() (Value, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.seen
}

func (c *Counter) remember(v Value) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.seen || v.Revision >= c.last.Revision {
		c.last, c.seen = v, true
	}
}
