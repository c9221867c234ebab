package election

import (
	"context"

	"github.com/concordkit/concord/internal/names"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is an election's leader and candidates, read at one revision.
type Status struct {
	// Leader is the current leader; Leader.None() when nobody leads.
	Leader Leader
	// Candidates are the candidates behind the leader, in the order they
	// will be elected. Each one's Token is its key's create revision.
	Candidates []Leader
	// Revision is the etcd revision the status was read at.
	Revision int64
}

// Inspect reads the leader and the waiting candidates of the election name
// in one request.
func Inspect(ctx context.Context, client *clientv3.Client, name string) (Status, error) {
	if err := names.Validate(name); err != nil {
		return Status{}, err
	}
	resp, err := client.Get(ctx, prefixOf(name), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return Status{}, err
	}
	rev := resp.Header.Revision
	st := Status{Leader: Leader{Revision: rev}, Revision: rev}
	for i, kv := range resp.Kvs {
		if i == 0 {
			st.Leader = leaderOf(kv, rev)
			continue
		}
		st.Candidates = append(st.Candidates, leaderOf(kv, rev))
	}
	return st, nil
}
