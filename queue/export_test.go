package queue

import (
	"context"

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
	c, _, err := q.claimOne(ctx, s, kv, rev)
	return c, err
}

// Undo runs what a claim of kv whose answer was lost runs.
func (q *Queue) Undo(ctx context.Context, s *concurrency.Session, kv *mvccpb.KeyValue) {
	m, _, _ := decode(kv.Value)
	q.undoClaim(ctx, s, kv, m.ID)
}

// Inspect is the package's Inspect on q.
func (q *Queue) Inspect(ctx context.Context) (Status, error) { return q.inspect(ctx) }
