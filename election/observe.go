package election

import (
	"context"
	"sync"

	"github.com/concordkit/concord/concurrency"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Observer streams an election's leadership changes. It is safe for
// concurrent use.
type Observer struct {
	c    chan Leader
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// C delivers the current state first, then every change in order: a new
// leader, a proclaimed value, or "no leader" (Leader.None). The channel is
// closed only when the context given to Observe ends.
func (o *Observer) C() <-chan Leader { return o.c }

// Done is closed when the observer has stopped.
func (o *Observer) Done() <-chan struct{} { return o.done }

// Err says why the stream ended (the context's error); nil while it runs.
func (o *Observer) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Observe follows the election name with a resumable watch: it survives
// compaction, member restarts and reconnects by re-reading the candidates
// and continuing, and reports "no leader" when the last candidate leaves.
// Every state the watch sees is delivered (a slow reader slows the stream;
// nothing is dropped).
func Observe(ctx context.Context, client *clientv3.Client, name string) (*Observer, error) {
	if err := concurrency.ValidateName(name); err != nil {
		return nil, err
	}
	o := &Observer{c: make(chan Leader), done: make(chan struct{})}
	st := concurrency.Follow(ctx, client, prefixOf(name))
	go o.run(ctx, st)
	return o, nil
}

// Observe is the package-level Observe on this election.
func (e *Election) Observe(ctx context.Context) *Observer {
	o := &Observer{c: make(chan Leader), done: make(chan struct{})}
	go o.run(ctx, concurrency.Follow(ctx, e.s.Client(), e.prefix))
	return o
}

func (o *Observer) run(ctx context.Context, st *concurrency.Stream) {
	defer close(o.done)
	defer close(o.c)
	defer func() {
		<-st.Done()
		o.mu.Lock()
		o.err = ctx.Err()
		o.mu.Unlock()
	}()
	cands := map[string]*mvccpb.KeyValue{}
	var last *Leader
	for u := range st.C() {
		if u.Snapshot {
			clear(cands)
			for _, kv := range u.KVs {
				cands[string(kv.Key)] = kv
			}
			if !o.emit(ctx, &last, cands, u.Revision) {
				return
			}
			continue
		}
		// Judge after each event so intermediate states within one
		// response (a resign and the next election) are reported too.
		for _, ev := range u.Events {
			if ev.Type == mvccpb.DELETE {
				delete(cands, string(ev.Kv.Key))
			} else {
				cands[string(ev.Kv.Key)] = ev.Kv
			}
			if !o.emit(ctx, &last, cands, ev.Kv.ModRevision) {
				return
			}
		}
	}
}

// emit sends the leader implied by cands if it differs from the last one
// sent.
func (o *Observer) emit(ctx context.Context, last **Leader, cands map[string]*mvccpb.KeyValue, rev int64) bool {
	var first *mvccpb.KeyValue
	for _, kv := range cands {
		if first == nil || kv.CreateRevision < first.CreateRevision {
			first = kv
		}
	}
	cur := leaderOf(first, rev)
	if *last != nil && (*last).Key == cur.Key && (*last).Token == cur.Token && (*last).Value == cur.Value {
		return true
	}
	select {
	case o.c <- cur:
		*last = &cur
		return true
	case <-ctx.Done():
		return false
	}
}
