// Package watch is the one resumable-watch loop (From) and Follow, the
// snapshot-then-changes stream built on it.
package watch

import (
	"context"
	"errors"
	"time"

	"github.com/concordkit/concord/internal/errs"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	// ErrCompacted: a watch's start revision was compacted away; the
	// caller must re-read the state instead of resuming.
	ErrCompacted = errs.Compacted
	// ErrWatchStalled: a watch was silent past its stall timeout and did
	// not answer a progress request (a blackholed or paused connection).
	ErrWatchStalled = errs.WatchStalled
	// ErrWatchClosed: the server or client ended a watch without a reason.
	ErrWatchClosed = errs.WatchClosed
)

// DefaultStallTimeout is how long a resumable watch may stay silent, and
// unanswered to a progress request, before it is replaced.
const DefaultStallTimeout = 10 * time.Second

// progressTimeout bounds the send of one progress request.
const progressTimeout = 100 * time.Millisecond

// From watches key (with opts, e.g. WithPrefix) from revision rev and
// calls handle with each batch of events, in order, until handle returns
// false, ctx ends or the watch breaks. It returns why it ended (ctx.Err(),
// ErrCompacted, ErrWatchStalled, ErrWatchClosed or the watch's error) and
// whether any event arrived (the watch was healthy for a while), so the
// caller can resume from the last revision it handled + 1, or re-read after
// ErrCompacted. The watch requires a leader, so a member cut off from its
// cluster cannot hold it; one silent for stall/2 is sent a progress
// request, and one still silent after stall counts as dead.
//
// This is the one resumable-watch loop; Follow and the recipes' streams are
// built on it.
func From(ctx context.Context, c *clientv3.Client, key string, rev int64, stall time.Duration,
	handle func([]*clientv3.Event) bool, opts ...clientv3.OpOption) (healthy bool, err error) {
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	// The client groups watches by outgoing metadata: every watch whose
	// context carries require-leader alone shares one stream.
	wctx, cancel := Context(ctx)
	defer cancel()
	opts = append(opts, clientv3.WithRev(rev), clientv3.WithCreatedNotify())
	wch := c.Watch(wctx, key, opts...)
	tick := time.NewTicker(max(stall/4, time.Millisecond))
	defer tick.Stop()
	last, asked := time.Now(), false
	for {
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return healthy, ctx.Err()
				}
				return healthy, ErrWatchClosed
			}
			if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
				return healthy, ErrCompacted
			}
			if err := wr.Err(); err != nil {
				return healthy, err
			}
			if wr.Canceled {
				return healthy, ErrWatchClosed
			}
			if len(wr.Events) > 0 {
				healthy = true
				if !handle(wr.Events) {
					return healthy, ctx.Err()
				}
			}
			last, asked = time.Now(), false
		case now := <-tick.C:
			idle := now.Sub(last)
			if idle >= stall {
				return healthy, ErrWatchStalled
			}
			if idle >= stall/2 && !asked {
				asked = true
				pctx, pcancel := context.WithTimeout(wctx, progressTimeout)
				_ = c.RequestProgress(pctx)
				pcancel()
			}
		}
	}
}

// Context derives the context for a watch that should share the session's
// watch stream: the client groups watches by their outgoing metadata, and
// every watch whose context carries require-leader alone shares one stream.
func Context(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithCancel(clientv3.WithRequireLeader(ctx))
}
