package concurrency

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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
	Events []*clientv3.Event
	// Revision is the store revision this update brings the follower to.
	Revision int64
	// Resync is true for a snapshot that replaces history compacted away
	// while the watch was broken: events between the previous update and
	// this snapshot were not seen one by one.
	Resync bool
}

// Stream is a resumable watch of a prefix. Its channel closes only when the
// context given to Follow ends; Err then says why.
type Stream struct {
	c    chan Update
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// C is the stream's updates, in revision order.
func (st *Stream) C() <-chan Update { return st.c }

// Done is closed when the stream's goroutine has exited.
func (st *Stream) Done() <-chan struct{} { return st.done }

// Err is why the stream ended (the context's error); nil while it runs.
func (st *Stream) Err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

// FollowOption configures Follow.
type FollowOption interface{ applyFollow(*followConfig) }

type followConfig struct {
	key   bool
	stall time.Duration
}

type followOptionFunc func(*followConfig)

func (f followOptionFunc) applyFollow(c *followConfig) { f(c) }

// FollowKey follows exactly the given key instead of every key under it.
func FollowKey() FollowOption { return followOptionFunc(func(c *followConfig) { c.key = true }) }

// FollowStallTimeout sets how long the watch may stay silent (and
// unanswered to a progress request) before it is replaced. Default
// DefaultStallTimeout.
func FollowStallTimeout(d time.Duration) FollowOption {
	return followOptionFunc(func(c *followConfig) { c.stall = d })
}

// Follow lists prefix at a revision R, sends that snapshot, then watches from
// R+1 and sends every change. When the watch breaks (a member restart, a
// lost leader, a broken or stalled connection) it resumes after the last
// revision it sent, so no change is lost or sent twice; when that history
// was compacted away it re-lists and sends the new state as a Resync
// snapshot. Never a silently closed channel, never a silent gap. The watch
// requires a leader, so a member cut off from its cluster cannot stall the
// stream.
func Follow(ctx context.Context, client *clientv3.Client, prefix string, opts ...FollowOption) *Stream {
	cfg := followConfig{stall: DefaultStallTimeout}
	for _, o := range opts {
		o.applyFollow(&cfg)
	}
	st := &Stream{c: make(chan Update), done: make(chan struct{})}
	go st.run(ctx, client, prefix, cfg)
	return st
}

func (st *Stream) run(ctx context.Context, client *clientv3.Client, key string, cfg followConfig) {
	defer close(st.done)
	defer close(st.c)
	defer func() {
		st.mu.Lock()
		st.err = ctx.Err()
		st.mu.Unlock()
	}()
	var opts []clientv3.OpOption
	if !cfg.key {
		opts = append(opts, clientv3.WithPrefix())
	}
	retry := newRetryBackoff(2 * time.Second)
	rev := int64(0) // every change up to rev has been sent
	snapshot, resync := true, false
	for ctx.Err() == nil {
		var err error
		if snapshot {
			rev, err = st.snapshot(ctx, client, key, opts, cfg.stall, resync)
			if err == nil {
				snapshot, resync = false, true
			}
		}
		if err == nil {
			var healthy bool
			healthy, err = WatchFrom(ctx, client, key, rev+1, cfg.stall, func(evs []*clientv3.Event) bool {
				r := evs[len(evs)-1].Kv.ModRevision
				if !st.send(ctx, Update{Events: evs, Revision: r}) {
					return false
				}
				rev = r
				return true
			}, append(opts, clientv3.WithPrevKV())...)
			if healthy {
				retry.Reset()
			}
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrCompacted) {
			snapshot = true
			continue
		}
		if !sleepOr(ctx.Done(), retry.NextBackOff()) {
			return
		}
	}
}

// snapshot reads and sends the current state; it returns its revision.
func (st *Stream) snapshot(ctx context.Context, client *clientv3.Client, key string, opts []clientv3.OpOption, stall time.Duration, resync bool) (int64, error) {
	gctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), stall)
	defer cancel()
	resp, err := client.Get(gctx, key, opts...)
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	if !st.send(ctx, Update{Snapshot: true, KVs: resp.Kvs, Revision: rev, Resync: resync}) {
		return 0, ctx.Err()
	}
	return rev, nil
}

func (st *Stream) send(ctx context.Context, u Update) bool {
	select {
	case st.c <- u:
		return true
	case <-ctx.Done():
		return false
	}
}
