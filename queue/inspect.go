package queue

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Item is an item as an operator sees it.
type Item struct {
	ID       string
	Priority int
	Attempts int
	Enqueued time.Time
	// Due is when a delayed item becomes claimable (zero otherwise). A
	// Ready item with a Due in the past was delayed and is due: claimable
	// now, and moved to the ready line by the next claim.
	Due     time.Time
	Payload []byte
	// Claimed is true for an item a consumer holds; Lease is its lease.
	Claimed bool
	Lease   clientv3.LeaseID
}

// Status lists a queue's items by state, each in delivery order, read at
// one revision. Ready holds the items a claim can take now, delayed items
// already due included (by this machine's clock, as claims judge it);
// Delayed, those not due yet. Orphaned items were claimed by a consumer
// whose lease has since gone; the next claim returns them to the queue at
// their place.
type Status struct {
	Ready, Delayed, Claimed, Orphaned, Dead []Item
	Revision                                int64
}

// Len is the number of items not yet acknowledged (ready, delayed, claimed
// and orphaned), read at one revision; dead letters are not counted.
func (q *Queue) Len(ctx context.Context) (int64, error) {
	resp, err := q.client.Txn(ctx).Then(
		clientv3.OpGet(q.pfx+readyDir, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(q.pfx+delayedDir, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(q.pfx+pendingDir, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(q.pfx+ownedDir, clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, r := range resp.Responses {
		n += r.GetResponseRange().Count
	}
	return n, nil
}

// Inspect lists every item of the queue name by state, with any client.
func Inspect(ctx context.Context, client *clientv3.Client, name string) (Status, error) {
	q, err := New(client, name)
	if err != nil {
		return Status{}, err
	}
	return q.inspect(ctx)
}

func (q *Queue) inspect(ctx context.Context) (Status, error) {
	byKey := clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)
	byCreate := clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)
	resp, err := q.client.Txn(ctx).Then(
		clientv3.OpGet(q.pfx+readyDir, clientv3.WithPrefix(), byKey),
		clientv3.OpGet(q.pfx+delayedDir, clientv3.WithPrefix(), byKey),
		clientv3.OpGet(q.pfx+pendingDir, clientv3.WithPrefix(), byCreate),
		clientv3.OpGet(q.pfx+deadDir, clientv3.WithPrefix(), byCreate),
		clientv3.OpGet(q.pfx+claimDir, clientv3.WithPrefix()),
		clientv3.OpGet(q.pfx+ownedDir, clientv3.WithPrefix(), byCreate),
	).Commit()
	if err != nil {
		return Status{}, err
	}
	leases := map[string]clientv3.LeaseID{}
	for _, kv := range resp.Responses[4].GetResponseRange().Kvs {
		leases[strings.TrimPrefix(string(kv.Key), q.pfx+claimDir)] = clientv3.LeaseID(kv.Lease)
	}
	ready, delayed := q.readyAndDue(resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs, time.Now())
	st := Status{Ready: ready, Delayed: delayed, Revision: resp.Header.Revision}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		it, ok := itemOf(kv)
		if !ok {
			// Not an item Enqueue wrote (Requeue takes it whole as the
			// payload): listed, so that it can be requeued or deleted.
			it = Item{ID: strings.TrimPrefix(string(kv.Key), q.pfx+deadDir), Payload: kv.Value}
		}
		st.Dead = append(st.Dead, it)
	}
	// Claimed items, under p/ (older versions) and o/, in claim order.
	kvs := append(slices.Clone(resp.Responses[2].GetResponseRange().Kvs), resp.Responses[5].GetResponseRange().Kvs...)
	slices.SortStableFunc(kvs, func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) })
	for _, kv := range kvs {
		it, ok := itemOf(kv)
		if !ok {
			continue
		}
		lease, ok := leases[it.ID]
		if !ok {
			st.Orphaned = append(st.Orphaned, it)
			continue
		}
		it.Claimed, it.Lease = true, lease
		st.Claimed = append(st.Claimed, it)
	}
	return st, nil
}

// readyAndDue splits the items a claim can take at now (the ready ones and
// the delayed ones already due, in the order a claim would take them once
// moved to the ready line) from those still delayed.
func (q *Queue) readyAndDue(readyKVs, delayedKVs []*mvccpb.KeyValue, now time.Time) (ready, delayed []Item) {
	type keyed struct {
		key string
		it  Item
	}
	var line []keyed
	for _, kv := range readyKVs {
		if it, ok := itemOf(kv); ok {
			line = append(line, keyed{string(kv.Key), it})
		}
	}
	due := false
	for _, kv := range delayedKVs {
		m, _, err := decode(kv.Value)
		it, ok := itemOf(kv)
		if err != nil || !ok {
			continue
		}
		if m.Due > now.UnixNano() {
			delayed = append(delayed, it)
			continue
		}
		m.Due = 0
		line = append(line, keyed{q.readyKey(m), it})
		due = true
	}
	if due {
		slices.SortStableFunc(line, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	}
	for _, k := range line {
		ready = append(ready, k.it)
	}
	return ready, delayed
}

func itemOf(kv *mvccpb.KeyValue) (Item, bool) {
	m, payload, err := decode(kv.Value)
	if err != nil {
		return Item{}, false
	}
	it := Item{ID: m.ID, Priority: m.Priority, Attempts: m.Attempts, Enqueued: time.Unix(0, m.Enqueued), Payload: payload}
	if m.Due > 0 {
		it.Due = time.Unix(0, m.Due)
	}
	return it, true
}
