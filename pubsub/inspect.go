package pubsub

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is a topic's retention and last message, read at one revision.
// Subscribers leave nothing in etcd, so they are not listed.
type Status struct {
	// KeptUntilCompaction is true for a topic whose messages are the
	// history of one key (KeepUntilCompaction): Retained and Trimmed are
	// then 0, etcd's compaction decides what is kept.
	KeptUntilCompaction bool
	// Retained is how many messages the topic keeps now.
	Retained int64
	// Trimmed is how many messages retention has deleted so far.
	Trimmed int64
	// Last is the newest message (Seq: the topic's message count); nil when
	// the topic has none.
	Last *Event
	// Revision is the etcd revision the status was read at.
	Revision int64
}

// Inspect reads topic's retention record and its newest message in one
// request, without subscribing.
func Inspect(ctx context.Context, client *clientv3.Client, topic string) (Status, error) {
	if err := validateTopic(topic); err != nil {
		return Status{}, err
	}
	resp, err := client.Txn(ctx).Then(
		clientv3.OpGet(modeKey(topic)),
		clientv3.OpGet(trimKey(topic)),
		clientv3.OpGet(msgPrefix(topic), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(msgPrefix(topic), clientv3.WithPrefix(), clientv3.WithLimit(1),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend)),
		clientv3.OpGet(logKey(topic)),
	).Commit()
	if err != nil {
		return Status{}, err
	}
	r := func(i int) *clientv3.GetResponse {
		return (*clientv3.GetResponse)(resp.Responses[i].GetResponseRange())
	}
	st := Status{Revision: resp.Header.Revision}
	if mode := r(0).Kvs; len(mode) > 0 && string(mode[0].Value) == modeLog {
		st.KeptUntilCompaction = true
		if kvs := r(4).Kvs; len(kvs) > 0 {
			if t, data, ok := parseLogValue(kvs[0].Value); ok {
				st.Last = &Event{Revision: kvs[0].ModRevision, Data: data, Time: t, Seq: kvs[0].Version}
			}
		}
		return st, nil
	}
	if kvs := r(1).Kvs; len(kvs) > 0 {
		rec, err := parseTrimRecord(kvs[0].Value)
		if err != nil {
			return Status{}, err
		}
		st.Trimmed = rec.count
	}
	st.Retained = r(2).Count
	if kvs := r(3).Kvs; len(kvs) > 0 {
		kv := kvs[0]
		st.Last = &Event{Revision: kv.ModRevision, Data: kv.Value, Time: msgTime(msgPrefix(topic), kv.Key), Seq: st.Trimmed + st.Retained}
	}
	return st, nil
}
