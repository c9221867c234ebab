package queue

import (
	"context"
	"strings"
	"time"

	"github.com/concordkit/concord/concurrency"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// NextCandidates is how many items AckNext tries to claim with its ack.
const NextCandidates = nextCandidates

// SetSlowLookEvery sets how often q's looks for orphans are whole, and
// counts one as made now.
func (q *Queue) SetSlowLookEvery(d time.Duration) {
	q.slowEvery = d
	q.lastSlow.Store(time.Now().UnixNano())
}

// Noted reports how many sessions q remembers marking (see note).
func (q *Queue) Noted() int {
	n := 0
	q.noted.Range(func(any, any) bool { n++; return true })
	return n
}

// Look looks for items of dead consumers once, as the first consumer in
// line does, and says how many it returned.
func (q *Queue) Look(ctx context.Context) (int, error) { return q.requeueOrphans(ctx, false) }

// Head reads the first ready item's key-value, as a claim reads it, and the
// revision of that read.
func (q *Queue) Head(ctx context.Context) (*mvccpb.KeyValue, int64, error) {
	resp, err := q.client.Get(ctx, q.pfx+readyDir, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return nil, 0, err
	}
	return resp.Kvs[0], resp.Header.Revision, nil
}

// LostClaim is one claim transaction of an item whose answer is lost: sent
// (Land) and undone (Undo) apart, in either order, as the server may run
// them.
type LostClaim struct {
	q  *Queue
	s  *concurrency.Session
	ct *claimTxn
}

// LostClaim is a claim of kv, as read at rev, for s.
func (q *Queue) LostClaim(s *concurrency.Session, kv *mvccpb.KeyValue, rev int64) *LostClaim {
	m, payload, _ := decode(kv.Value)
	return &LostClaim{q: q, s: s, ct: q.claimTxnFor(s, kv, &view{rev: rev}, m, payload)}
}

// Land sends the claim transaction and says whether it claimed the item.
func (l *LostClaim) Land(ctx context.Context) (bool, error) {
	resp, err := l.q.client.Txn(ctx).If(l.ct.cmps...).Then(l.ct.then...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Undo runs what a failed Claim runs after losing the claim's answer.
func (l *LostClaim) Undo(ctx context.Context) {
	l.q.undoClaim(ctx, l.s, l.ct)
}

// Inspect is the package's Inspect on q.
func (q *Queue) Inspect(ctx context.Context) (Status, error) { return q.inspect(ctx) }

// Preload stores n items as Enqueue would (item i with payload(i), at
// priority 0, delayed by delay when it is positive), batch items to a
// transaction, so a test can build a deep queue in seconds, not minutes.
func (q *Queue) Preload(ctx context.Context, n, batch int, payload func(i int) []byte, delay time.Duration) error {
	for done := 0; done < n; {
		var ops []clientv3.Op
		var first string
		for ; len(ops) < batch && done < n; done++ {
			now := q.order()
			m := meta{ID: newID(), Order: now, Enqueued: now}
			if delay > 0 {
				m.Due = now + int64(delay)
			}
			if first == "" {
				first = q.placeKey(m)
			}
			ops = append(ops, clientv3.OpPut(q.placeKey(m), encode(m, payload(done))))
		}
		if strings.HasPrefix(first, q.pfx+readyDir) {
			ops = append(ops, q.lowerOp(first)) // the batch's first sorts first
		}
		if _, err := q.client.Txn(ctx).Then(ops...).Commit(); err != nil {
			return err
		}
	}
	return nil
}

// FrontKey is the key of q's front: where claims start reading.
func (q *Queue) FrontKey() string { return q.frontKey() }

// ReadyPrefix is where q's ready items are kept.
func (q *Queue) ReadyPrefix() string { return q.pfx + readyDir }

// SamePriority is the package's samePriority.
var SamePriority = samePriority

// ReadyKeysForTest returns ready keys of q for items of the given
// priorities, in that order.
func ReadyKeysForTest(q *Queue, prios []int) []*mvccpb.KeyValue {
	var kvs []*mvccpb.KeyValue
	for i, p := range prios {
		kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(q.readyKey(meta{Priority: p, Order: int64(i), ID: "x"}))})
	}
	return kvs
}
