package election

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/stream"
	"github.com/concordkit/concord/internal/telemetry"
	"github.com/concordkit/concord/internal/watch"
)

// Observe follows the election name with a resumable watch: it survives
// compaction, member restarts and reconnects by re-reading the candidates
// and continuing, and reports "no leader" (Leader.None) when the last
// candidate leaves. The stream delivers the current state first, then every
// change in order: a new leader, a proclaimed value, or "no leader". Every
// state the watch sees is delivered (a slow reader slows the stream; nothing
// is dropped). The stream closes only when ctx ends; its Err is then ctx's.
func Observe(ctx context.Context, client *clientv3.Client, name string) (*concurrency.Stream[Leader], error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	return observe(ctx, client, prefixOf(name), &telemetry.For(nil, nil).Election, ""), nil
}

// Observe is the package-level Observe on this election.
func (e *Election) Observe(ctx context.Context) (*concurrency.Stream[Leader], error) {
	return observe(ctx, e.s.Client(), e.prefix, &e.s.Telemetry().Election, e.scope.Name), nil
}

// observe follows the election under prefix; each new leader it sees after
// the first state counts in tel's leader changes (named name, "" for none).
func observe(ctx context.Context, client *clientv3.Client, prefix string, tel *telemetry.ElectionInstruments, name string) *concurrency.Stream[Leader] {
	o := &observer{out: stream.New[Leader](), cands: map[string]*mvccpb.KeyValue{}, tel: tel, name: name}
	go o.run(ctx, watch.Follow(ctx, client, prefix, watch.Options{}))
	return (*concurrency.Stream[Leader])(o.out)
}

// observer turns the candidates' updates into leadership states.
type observer struct {
	out   *stream.Stream[Leader]
	cands map[string]*mvccpb.KeyValue
	last  *Leader
	term  concurrency.Token // the last leader's token (0: none seen yet)
	tel   *telemetry.ElectionInstruments
	name  string
}

func (o *observer) run(ctx context.Context, st *stream.Stream[watch.Update]) {
	defer func() {
		<-st.Done()
		o.out.Finish(ctx.Err())
	}()
	for u := range st.C() {
		if u.Snapshot {
			clear(o.cands)
			for _, kv := range u.KVs {
				o.cands[string(kv.Key)] = kv
			}
			if !o.emit(ctx, u.Revision) {
				return
			}
			continue
		}
		// Judge after each event so intermediate states within one
		// response (a resign and the next election) are reported too.
		for _, ev := range u.Events {
			if ev.Type == mvccpb.DELETE {
				delete(o.cands, string(ev.Kv.Key))
			} else {
				o.cands[string(ev.Kv.Key)] = ev.Kv
			}
			if !o.emit(ctx, ev.Kv.ModRevision) {
				return
			}
		}
	}
}

// emit sends the leader implied by the candidates if it differs from the
// last one sent.
func (o *observer) emit(ctx context.Context, rev int64) bool {
	var first *mvccpb.KeyValue
	for _, kv := range o.cands {
		if first == nil || kv.CreateRevision < first.CreateRevision {
			first = kv
		}
	}
	cur := leaderOf(first, rev)
	if o.last != nil && o.last.Key == cur.Key && o.last.Token == cur.Token && o.last.Value == cur.Value {
		return true
	}
	if !o.out.Send(ctx, cur) {
		return false
	}
	if o.last != nil && !cur.None() && cur.Token != o.term {
		o.tel.LeaderChanged(ctx, telemetry.SourceObserve, o.name)
	}
	if !cur.None() {
		o.term = cur.Token
	}
	o.last = &cur
	return true
}
