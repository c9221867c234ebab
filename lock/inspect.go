package lock

import (
	"context"
	"strings"

	"github.com/concordkit/concord/concurrency"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Entry is one holder or waiter of a lock, as stored in etcd.
type Entry struct {
	Key   string
	Value string
	// Token is the entry's fencing token (its key's create revision).
	Token concurrency.Token
	Lease clientv3.LeaseID
	// Reader is true for a read hold or wait on an RWMutex.
	Reader bool
}

func entryOf(kv *mvccpb.KeyValue) Entry {
	return Entry{
		Key:    string(kv.Key),
		Value:  string(kv.Value),
		Token:  concurrency.Token(kv.CreateRevision),
		Lease:  clientv3.LeaseID(kv.Lease),
		Reader: strings.Contains(string(kv.Key), "/.rw/r/"),
	}
}

// Status is who holds a lock and who waits, in grant order.
type Status struct {
	Holders []Entry
	Waiters []Entry
	// Revision is the etcd revision the status was read at.
	Revision int64
}

// Inspect reads the holder and waiters of the Mutex name in one request.
func Inspect(ctx context.Context, client *clientv3.Client, name string) (Status, error) {
	if err := validate(name); err != nil {
		return Status{}, err
	}
	kvs, rev, err := readLine(ctx, client, mutexPrefix(name))
	if err != nil {
		return Status{}, err
	}
	st := Status{Revision: rev}
	for i, kv := range kvs {
		if i == 0 {
			st.Holders = append(st.Holders, entryOf(kv))
		} else {
			st.Waiters = append(st.Waiters, entryOf(kv))
		}
	}
	return st, nil
}

// InspectRW reads the holders (the readers before the first writer, or that
// writer) and waiters of the RWMutex name in one request.
func InspectRW(ctx context.Context, client *clientv3.Client, name string) (Status, error) {
	if err := validate(name); err != nil {
		return Status{}, err
	}
	kvs, rev, err := readLine(ctx, client, rwPrefix(name))
	if err != nil {
		return Status{}, err
	}
	st := Status{Revision: rev}
	waiting := false
	for i, kv := range kvs {
		e := entryOf(kv)
		switch {
		case !waiting && e.Reader:
			st.Holders = append(st.Holders, e)
		case !waiting && i == 0:
			st.Holders = append(st.Holders, e)
			waiting = true
		default:
			waiting = true
			st.Waiters = append(st.Waiters, e)
		}
	}
	return st, nil
}

func readLine(ctx context.Context, client *clientv3.Client, prefix string) ([]*mvccpb.KeyValue, int64, error) {
	resp, err := client.Get(ctx, prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, 0, err
	}
	return resp.Kvs, resp.Header.Revision, nil
}
