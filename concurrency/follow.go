package concurrency

import (
	"context"
	"sync"

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
	// Resync is true for a snapshot that replaces a broken watch (after
	// compaction, a lost leader or a broken connection): events between the
	// previous update and this snapshot were not seen one by one.
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

// Follow lists prefix at a revision R, sends that snapshot, then watches from
// R+1 and sends every change. When the watch breaks (compaction, a member
// restart, a lost leader, a broken connection) it re-lists with backoff and
// sends the new state as a Resync snapshot: never a silently closed channel,
// never a silent gap. The watch requires a leader, so a member cut off from
// its cluster cannot stall the stream.
func Follow(ctx context.Context, client *clientv3.Client, prefix string) *Stream {
	st := &Stream{c: make(chan Update), done: make(chan struct{})}
	go st.run(ctx, client, prefix)
	return st
}

func (st *Stream) run(ctx context.Context, client *clientv3.Client, prefix string) {
	defer close(st.done)
	defer close(st.c)
	defer func() {
		st.mu.Lock()
		st.err = ctx.Err()
		st.mu.Unlock()
	}()
	retry := newRetryBackoff(2e9)
	resync := false
	for ctx.Err() == nil {
		resp, err := client.Get(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix())
		if err != nil {
			if !sleepOr(ctx.Done(), retry.NextBackOff()) {
				return
			}
			continue
		}
		rev := resp.Header.Revision
		if !st.send(ctx, Update{Snapshot: true, KVs: resp.Kvs, Revision: rev, Resync: resync}) {
			return
		}
		resync = true
		wctx, cancel := watchContext(ctx)
		wch := client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		healthy := st.forward(ctx, wch)
		cancel()
		if healthy {
			retry.Reset()
		}
		if !sleepOr(ctx.Done(), retry.NextBackOff()) {
			return
		}
	}
}

// forward sends the watch's events until it breaks; it reports whether any
// arrived (the watch was healthy for a while).
func (st *Stream) forward(ctx context.Context, wch clientv3.WatchChan) bool {
	got := false
	for wr := range wch {
		if wr.Canceled || wr.Err() != nil {
			return got
		}
		if len(wr.Events) == 0 {
			continue // progress notification
		}
		got = true
		if !st.send(ctx, Update{Events: wr.Events, Revision: wr.Events[len(wr.Events)-1].Kv.ModRevision}) {
			return got
		}
	}
	return got
}

func (st *Stream) send(ctx context.Context, u Update) bool {
	select {
	case st.c <- u:
		return true
	case <-ctx.Done():
		return false
	}
}
