package watch

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/retry"
)

// stallTimeout is how long a wait's watch may stay silent, and unanswered
// to a progress request, before it is replaced.
const stallTimeout = DefaultStallTimeout

// Until waits for a condition on key (or, with opts, a range). It opens
// a watch without a start revision, so the server serves it at once (a watch
// opened at an old revision waits up to 100 ms per event for the server's
// slow loop), and once the server has created it calls read, which reads the
// state and returns its revision. From then on it calls handle with every
// event after that revision, in order. Both return done once the condition
// holds; read returns revision 0 (and no error) when it could not read, and
// is tried again after a pause. If the watch breaks, Until resumes after the last revision
// seen with From, so no event
// is missed; after compaction it calls read again. It returns nil once done,
// ctx.Err() when ctx ends, or an error of read or handle.
//
// seen is the revision of a read the caller already made (0 if none): when
// the watch is created at or before it, nothing changed since and read is
// not called. With resume, the caller's state is as of seen and the watch
// starts right after it instead (a watch at a past revision: the first
// events may take up to the server's 100 ms slow loop).
func Until(ctx context.Context, c *clientv3.Client, key string, opts []clientv3.OpOption, seen int64, resume bool,
	read func(ctx context.Context) (rev int64, done bool, err error),
	handle func(evs []*clientv3.Event) (done bool, err error)) error {
	last := seen
	if !resume {
		var done bool
		var err error
		last, done, err = syncedWatch(ctx, c, key, opts, seen, read, handle)
		if done || err != nil {
			return err
		}
	}
	backoff := retry.Watch.New()
	for ctx.Err() == nil {
		if last == 0 {
			rev, done, err := read(ctx)
			if done || err != nil {
				return err
			}
			last = rev
		}
		if last > 0 {
			var herr error
			var done bool
			healthy, werr := From(ctx, c, key, last+1, stallTimeout, func(evs []*clientv3.Event) bool {
				last = evs[len(evs)-1].Kv.ModRevision
				done, herr = handle(evs)
				return !done && herr == nil
			}, opts...)
			if done || herr != nil {
				return herr
			}
			if errors.Is(werr, ErrCompacted) {
				last = 0 // history gone: read the state afresh
				continue
			}
			if healthy {
				backoff.Reset()
			}
		}
		retry.Sleep(ctx, backoff.NextBackOff())
	}
	return ctx.Err()
}

// syncedWatch is Until's first watch, opened without a start revision.
// It returns the last revision it saw (0 if read never succeeded) when the
// watch breaks, stalls or is never created.
func syncedWatch(ctx context.Context, c *clientv3.Client, key string, opts []clientv3.OpOption, seen int64,
	read func(ctx context.Context) (int64, bool, error),
	handle func(evs []*clientv3.Event) (bool, error)) (last int64, done bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.Watch(wctx, key, append(opts[:len(opts):len(opts)], clientv3.WithCreatedNotify())...)
	tick := time.NewTicker(stallTimeout / 4)
	defer tick.Stop()
	quiet, asked := time.Now(), false
	for {
		select {
		case <-ctx.Done():
			return last, false, ctx.Err()
		case now := <-tick.C:
			idle := now.Sub(quiet)
			if idle >= stallTimeout {
				return last, false, nil
			}
			if idle >= stallTimeout/2 && !asked {
				asked = true
				pctx, pcancel := context.WithTimeout(wctx, 100*time.Millisecond)
				_ = c.RequestProgress(pctx)
				pcancel()
			}
		case wr, ok := <-wch:
			if !ok || wr.Canceled || wr.Err() != nil {
				if ctx.Err() != nil {
					return last, false, ctx.Err()
				}
				return last, false, nil
			}
			quiet, asked = time.Now(), false
			var stop bool
			last, stop, done, err = syncedResponse(ctx, wr, seen, last, read, handle)
			if stop {
				return last, done, err
			}
		}
	}
}

// syncedResponse handles one response of syncedWatch's watch: on creation
// it reads the state once (unless nothing changed since seen), then hands
// every later event to handle. It returns the last revision seen, and
// stop when syncedWatch must return (done, an error, or a failed read).
func syncedResponse(ctx context.Context, wr clientv3.WatchResponse, seen, last int64,
	read func(ctx context.Context) (int64, bool, error),
	handle func(evs []*clientv3.Event) (bool, error)) (int64, bool, bool, error) {
	if wr.Created {
		if seen > 0 && wr.Header.Revision <= seen {
			// Nothing was written since the caller's read.
			return seen, false, false, nil
		}
		// The watch sees every change from here on: read the state once.
		rev, done, err := read(ctx)
		return rev, done || err != nil || rev == 0, done, err
	}
	if last == 0 {
		return 0, false, false, nil // not created yet (cannot happen: created comes first)
	}
	var evs []*clientv3.Event
	for _, ev := range wr.Events {
		if ev.Kv.ModRevision > last {
			evs = append(evs, ev)
		}
	}
	if len(evs) == 0 {
		return last, false, false, nil
	}
	done, err := handle(evs)
	return evs[len(evs)-1].Kv.ModRevision, done || err != nil, done, err
}
