package watch

import (
	"context"
	"errors"
	"time"

	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/stream"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Update is one step of a Follow stream: either a snapshot of every key
// under the prefix (Snapshot true: the first update, and again after each
// resync) or the events that followed the previous update.
type Update struct {
	Snapshot bool
	// KVs is the full state under the prefix when Snapshot is true.
	KVs []*mvccpb.KeyValue
	// Events are the changes since the previous update (Snapshot false).
	// A change to an existing key carries its previous value (PrevKv),
	// unless etcd compacted it away before the change was sent.
	Events []*clientv3.Event
	// Revision is the store revision this update brings the follower to.
	Revision int64
	// Resync is true for a snapshot that replaces history compacted away
	// while the watch was broken: events between the previous update and
	// this snapshot were not seen one by one.
	Resync bool
}

// Options configure Follow.
type Options struct {
	// Key follows exactly the given key instead of every key under it.
	Key bool
	// Stall is how long the watch may stay silent (and unanswered to a
	// progress request) before it is replaced; 0 means DefaultStallTimeout.
	Stall time.Duration
}

// Follow lists prefix at a revision R, sends that snapshot, then watches from
// R+1 and sends every change. When the watch breaks (a member restart, a
// lost leader, a broken or stalled connection) it resumes after the last
// revision it sent, so no change is lost or sent twice; when that history
// was compacted away it re-lists and sends the new state as a Resync
// snapshot. Never a silently closed channel, never a silent gap. The watch
// requires a leader, so a member cut off from its cluster cannot stall the
// stream.
//
// The stream's channel closes only when ctx ends; Err is then ctx's error.
func Follow(ctx context.Context, client *clientv3.Client, prefix string, o Options) *stream.Stream[Update] {
	return FollowAs(ctx, client, prefix, o, func(u Update) Update { return u })
}

// FollowAs is Follow delivering each update as conv makes it (a recipe's
// own update type).
func FollowAs[T any](ctx context.Context, client *clientv3.Client, prefix string, o Options, conv func(Update) T) *stream.Stream[T] {
	if o.Stall <= 0 {
		o.Stall = DefaultStallTimeout
	}
	f := &follower[T]{st: stream.New[T](), client: client, conv: conv}
	go f.run(ctx, prefix, o)
	return f.st
}

// follower is the goroutine behind one Follow stream.
type follower[T any] struct {
	st     *stream.Stream[T]
	client *clientv3.Client
	conv   func(Update) T
}

func (f *follower[T]) run(ctx context.Context, key string, o Options) {
	defer func() { f.st.Finish(ctx.Err()) }()
	var opts []clientv3.OpOption
	if !o.Key {
		opts = append(opts, clientv3.WithPrefix())
	}
	backoff := retry.Watch.New()
	rev := int64(0) // every change up to rev has been sent
	snapshot, resync := true, false
	for ctx.Err() == nil {
		var err error
		if snapshot {
			rev, err = f.snapshot(ctx, key, opts, o.Stall, resync)
			if err == nil {
				snapshot, resync = false, true
			}
		}
		if err == nil {
			var healthy bool
			healthy, err = From(ctx, f.client, key, rev+1, o.Stall, func(evs []*clientv3.Event) bool {
				if !f.fillPrev(ctx, evs, o.Stall) {
					return false
				}
				r := evs[len(evs)-1].Kv.ModRevision
				if !f.st.Send(ctx, f.conv(Update{Events: evs, Revision: r})) {
					return false
				}
				rev = r
				return true
			}, append(opts, prevKV...)...)
			if healthy {
				backoff.Reset()
			}
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrCompacted) {
			snapshot = true
			continue
		}
		if !retry.Sleep(ctx, backoff.NextBackOff()) {
			return
		}
	}
}

// prevKV asks the watches of Follow for previous values (tests turn it
// off to see fillPrev make up for a server that sends none).
var prevKV = []clientv3.OpOption{clientv3.WithPrevKV()}

// fillPrev reads the previous value of each change to an existing key in
// evs that came without one, at the revision before the change: etcd's
// watch server fills them in only once it has recorded the watch's request
// for them, and a change made as the watch was created can come before
// that (seen once in CI). One compacted away stays nil. It returns false
// when ctx ended or a read failed otherwise: the follower then resumes its
// watch from the last update it sent, and gets these events again.
func (f *follower[T]) fillPrev(ctx context.Context, evs []*clientv3.Event, stall time.Duration) bool {
	for _, ev := range evs {
		if ev.PrevKv != nil || ev.IsCreate() {
			continue
		}
		gctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), stall)
		resp, err := f.client.Get(gctx, string(ev.Kv.Key), clientv3.WithRev(ev.Kv.ModRevision-1))
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
		case err != nil:
			return false
		case len(resp.Kvs) > 0:
			ev.PrevKv = resp.Kvs[0]
		}
	}
	return true
}

// snapshot reads and sends the current state; it returns its revision.
func (f *follower[T]) snapshot(ctx context.Context, key string, opts []clientv3.OpOption, stall time.Duration, resync bool) (int64, error) {
	gctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), stall)
	defer cancel()
	resp, err := f.client.Get(gctx, key, opts...)
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	if !f.st.Send(ctx, f.conv(Update{Snapshot: true, KVs: resp.Kvs, Revision: rev, Resync: resync})) {
		return 0, ctx.Err()
	}
	return rev, nil
}
