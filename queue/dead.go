package queue

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Requeue moves the dead letter id back to the queue, at the back of its
// priority, with its deliveries counted afresh; its payload is kept. It
// returns ErrNoDeadLetter if the queue has no dead letter id (never had, or
// it was requeued or deleted meanwhile).
func (q *Queue) Requeue(ctx context.Context, id string) error {
	kv, err := q.deadLetter(ctx, id)
	if err != nil {
		return err
	}
	m, payload, err := decode(kv.Value)
	if err != nil {
		// Not an item Enqueue wrote: requeue its whole value as the payload.
		m, payload = meta{ID: id}, kv.Value
	}
	m.ID, m.Attempts, m.Due = id, 0, 0
	m.Order = q.order()
	if m.Enqueued == 0 {
		m.Enqueued = m.Order
	}
	resp, err := q.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(q.deadKey(id)), "=", kv.ModRevision)).
		Then(append([]clientv3.Op{clientv3.OpDelete(q.deadKey(id))}, q.putItemOps(q.readyKey(m), encode(m, payload))...)...).
		Commit()
	if err != nil {
		return fmt.Errorf("queue: requeue %s: %w", id, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s (changed meanwhile)", ErrNoDeadLetter, id)
	}
	return nil
}

// DeleteDead deletes the dead letter id. It returns ErrNoDeadLetter if the
// queue has no dead letter id.
func (q *Queue) DeleteDead(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	resp, err := q.client.Delete(ctx, q.deadKey(id))
	if err != nil {
		return fmt.Errorf("queue: delete dead letter %s: %w", id, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: %s", ErrNoDeadLetter, id)
	}
	return nil
}

func (q *Queue) deadLetter(ctx context.Context, id string) (*mvccpb.KeyValue, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	resp, err := q.client.Get(ctx, q.deadKey(id))
	if err != nil {
		return nil, fmt.Errorf("queue: read dead letter %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoDeadLetter, id)
	}
	return resp.Kvs[0], nil
}

// validID refuses an id that cannot name an item: empty, or more than one
// key segment.
func validID(id string) error {
	if id == "" || strings.Contains(id, "/") {
		return fmt.Errorf("%w: id %q", ErrNoDeadLetter, id)
	}
	return nil
}
