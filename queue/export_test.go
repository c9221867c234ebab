package queue

import (
	"context"
	"time"

	"github.com/concordkit/concord/concurrency"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Head reads the first ready item's key-value, as a claim reads it, and the
// revision of that read.
func (q *Queue) Head(ctx context.Context) (*mvccpb.KeyValue, int64, error) {
	resp, err := q.client.Get(ctx, q.pfx+readyDir, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return nil, 0, err
	}
	return resp.Kvs[0], resp.Header.Revision, nil
}

// ClaimFrom sends the claim transaction for kv as read at rev; nil when it
// did not claim.
func (q *Queue) ClaimFrom(ctx context.Context, s *concurrency.Session, kv *mvccpb.KeyValue, rev int64) (*Claim, error) {
	c, _, err := q.claimOne(ctx, s, kv, &view{rev: rev})
	return c, err
}

// Undo runs what a claim of kv whose answer was lost runs.
func (q *Queue) Undo(ctx context.Context, s *concurrency.Session, kv *mvccpb.KeyValue) {
	m, _, _ := decode(kv.Value)
	q.undoClaim(ctx, s, kv, m.ID)
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
		if delay <= 0 {
			ops = append(ops, q.lowerOp(first)) // the batch's first sorts first
		}
		if _, err := q.client.Txn(ctx).Then(ops...).Commit(); err != nil {
			return err
		}
	}
	return nil
}

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
