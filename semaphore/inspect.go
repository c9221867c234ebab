package semaphore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/concordkit/concord/concurrency"

	"github.com/concordkit/concord/internal/names"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Entry is one holder or waiter of a semaphore, as stored in etcd.
type Entry struct {
	Key   string
	Value string
	// Token is the entry's fencing token (its key's create revision).
	Token concurrency.Token
	Lease clientv3.LeaseID
}

func entryOf(kv *mvccpb.KeyValue) Entry {
	return Entry{Key: string(kv.Key), Value: string(kv.Value), Token: concurrency.Token(kv.CreateRevision), Lease: clientv3.LeaseID(kv.Lease)}
}

// Status is a semaphore's stored limit, its holders and its waiters, in
// grant order, read at one revision.
type Status struct {
	// Limit is the stored limit; 0 if none is stored.
	Limit int
	// Holders are the first Limit keys in line. Right after the limit is
	// lowered, permits granted under the old limit that lie beyond the new
	// one are still held but listed among Waiters until they are released.
	Holders []Entry
	// Waiters are the keys behind the holders.
	Waiters []Entry
	// Revision is the etcd revision the status was read at.
	Revision int64
}

// Inspect reads the limit, holders and waiters of the semaphore name in one
// request.
func Inspect(ctx context.Context, client *clientv3.Client, name string) (Status, error) {
	if err := names.Validate(name); err != nil {
		return Status{}, err
	}
	resp, err := client.Txn(ctx).Then(
		clientv3.OpGet(limitKey(name)),
		clientv3.OpGet(permitPrefix(name), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)),
	).Commit()
	if err != nil {
		return Status{}, err
	}
	st := Status{Revision: resp.Header.Revision}
	if lkvs := resp.Responses[0].GetResponseRange().Kvs; len(lkvs) > 0 {
		n, err := parseLimit(lkvs[0].Value)
		if err != nil {
			return Status{}, err
		}
		st.Limit = n
	}
	for i, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if i < st.Limit {
			st.Holders = append(st.Holders, entryOf(kv))
		} else {
			st.Waiters = append(st.Waiters, entryOf(kv))
		}
	}
	return st, nil
}

// StoreLimit stores n as the limit of the semaphore name without a session,
// as an operator changes it: raising it admits waiters at once, lowering it
// revokes no permit. Semaphores created WithFollowLimit adopt it; others
// created with a different limit fail with ErrLimitMismatch until theirs is
// stored again.
func StoreLimit(ctx context.Context, client *clientv3.Client, name string, n int) error {
	if err := names.Validate(name); err != nil {
		return err
	}
	if n < 1 {
		return fmt.Errorf("%w: got %d", ErrInvalidLimit, n)
	}
	if _, err := client.Put(ctx, limitKey(name), strconv.Itoa(n)); err != nil {
		return fmt.Errorf("semaphore: store limit: %w", err)
	}
	return nil
}
