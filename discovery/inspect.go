package discovery

import (
	"context"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Registered is one instance's record as stored in etcd.
type Registered struct {
	Instance
	// Lease is the lease the record lives under (its Registry's).
	Lease clientv3.LeaseID
	// Since is the revision the record was first written at (its key's
	// create revision): it changes when a re-registration writes it anew.
	Since int64
}

// Status is a service's registered instances, sorted by ID, read at one
// revision.
type Status struct {
	Instances []Registered
	// Malformed counts records that are not discovery's (an undecodable
	// value or an ID that is not one key segment); they are not listed.
	Malformed int
	// Revision is the etcd revision the status was read at.
	Revision int64
}

// Inspect reads every registered instance of service in one request. Unlike
// a Watcher it keeps nothing running: it is for a one-off look, by an
// operator or a tool.
func Inspect(ctx context.Context, client *clientv3.Client, service string) (Status, error) {
	if err := ValidateService(service); err != nil {
		return Status{}, err
	}
	prefix := servicePrefix(service)
	resp, err := client.Get(ctx, prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return Status{}, err
	}
	st := Status{Revision: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), prefix)
		in, _, err := decodeRecord(id, kv.Value)
		if err != nil || validateSegment(ErrInvalidID, id) != nil {
			st.Malformed++
			continue
		}
		st.Instances = append(st.Instances, Registered{Instance: in, Lease: clientv3.LeaseID(kv.Lease), Since: kv.CreateRevision})
	}
	return st, nil
}
