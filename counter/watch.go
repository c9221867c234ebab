package counter

import (
	"context"
	"errors"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/stream"
	"github.com/concordkit/concord/internal/watch"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watcher is a stream of a counter's values. Its channel closes when the
// context given to Watch ends, or when the stored value is not an integer;
// Err then says why (ctx.Err() or ErrNotInteger).
type Watcher = concurrency.Stream[Value]

// watcher is the goroutine behind a Watcher.
type watcher struct{ out *stream.Stream[Value] }

// Watch streams the counter's values. With after == 0 it sends the current
// value first, then every later one; with after > 0 (a Value.Revision seen
// before) it sends every value set after that revision, so a consumer that
// restarts resumes where it stopped, missing and repeating nothing. Every
// value is sent, in order, even when several writes come close together
// (each write is a revision of its own). If the changes to send were
// compacted away, it sends the current value marked Resync and continues
// from there. Breaks in the connection are resumed from the last revision
// sent. The goroutine behind it stops when ctx ends.
func (c *Counter) Watch(ctx context.Context, after int64) *Watcher {
	w := &watcher{out: stream.New[Value]()}
	go func() { w.out.Finish(w.follow(ctx, c, after)) }()
	return (*Watcher)(w.out)
}

func (w *watcher) follow(ctx context.Context, c *Counter, after int64) error {
	backoff := retry.Watch.New()
	next := after + 1 // the first revision not yet looked at
	read := after == 0
	resync := false
	last := Value{Revision: after, N: -1} // the last value sent (N unknown)
	for ctx.Err() == nil {
		var err error
		if read {
			next, err = w.snapshot(ctx, c, resync, &last)
			if err == nil {
				read = false
			}
		}
		if err == nil {
			var healthy bool
			var bad error
			healthy, err = watch.From(ctx, c.client, c.key, next, watch.DefaultStallTimeout, func(evs []*clientv3.Event) bool {
				for _, ev := range evs {
					v := Value{Revision: ev.Kv.ModRevision}
					if ev.Type == clientv3.EventTypePut {
						if v, bad = valueOf([]*mvccpb.KeyValue{ev.Kv}); bad != nil {
							return false
						}
					}
					if !w.send(ctx, v) {
						return false
					}
					last, next = v, v.Revision+1
				}
				return true
			})
			if bad != nil {
				return bad
			}
			if healthy {
				backoff.Reset()
			}
		}
		if errors.Is(err, ErrNotInteger) {
			return err
		}
		if errors.Is(err, watch.ErrCompacted) {
			read, resync = true, true
			continue
		}
		retry.Sleep(ctx, backoff.NextBackOff())
	}
	return ctx.Err()
}

// snapshot sends the current value and returns the revision to watch from.
// After compaction (resync) it sends nothing when the value is still the
// last one sent: nothing was missed.
func (w *watcher) snapshot(ctx context.Context, c *Counter, resync bool, last *Value) (int64, error) {
	resp, err := c.client.Get(clientv3.WithRequireLeader(ctx), c.key)
	if err != nil {
		return 0, err
	}
	v, err := valueOf(resp.Kvs)
	if err != nil {
		return 0, err
	}
	if resync {
		if len(resp.Kvs) == 0 {
			if last.N == 0 {
				return resp.Header.Revision + 1, nil // deleted or never set, as sent
			}
			// Deleted meanwhile, at a revision compacted away.
			v.Revision = resp.Header.Revision
		} else if v.Revision <= last.Revision {
			return resp.Header.Revision + 1, nil
		}
		v.Resync = true
	}
	if !w.send(ctx, v) {
		return 0, ctx.Err()
	}
	*last = v
	return resp.Header.Revision + 1, nil
}

func (w *watcher) send(ctx context.Context, v Value) bool { return w.out.Send(ctx, v) }
