package pubsub

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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

// Inspect reads topic's retention record and its newest message, at one
// revision, without subscribing. It reads no message but the newest: the
// record first, then a count of the message keys and the newest's key,
// from the topic's floor (see the package doc), then its value; a read of
// every retained message (18 ms of server CPU at 10,000 retained,
// BenchmarkInspect) would cost the server that much each time the console
// shows the topic change. A message an older version wrote below the floor
// (see the package doc) is not counted.
func Inspect(ctx context.Context, client *clientv3.Client, topic string) (Status, error) {
	if err := validateTopic(topic); err != nil {
		return Status{}, err
	}
	for tries := 1; ; tries++ {
		// The later reads are at the first's revision: a compaction
		// past it in between fails them, and Inspect reads again.
		st, err := inspect(ctx, client, topic)
		if !errors.Is(err, rpctypes.ErrCompacted) || tries == 3 {
			return st, err
		}
	}
}

func inspect(ctx context.Context, client *clientv3.Client, topic string) (Status, error) {
	resp, err := client.Txn(ctx).Then(
		clientv3.OpGet(modeKey(topic)),
		clientv3.OpGet(trimKey(topic)),
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
		if kvs := r(2).Kvs; len(kvs) > 0 {
			if t, data, ok := parseLogValue(kvs[0].Value); ok {
				st.Last = &Event{Revision: kvs[0].ModRevision, Data: data, Time: t, Seq: kvs[0].Version}
			}
		}
		return st, nil
	}
	var rec trimRecord
	if kvs := r(1).Kvs; len(kvs) > 0 {
		if rec, err = parseTrimRecord(kvs[0].Value); err != nil {
			return Status{}, err
		}
		st.Trimmed = rec.count
	}
	prefix, at := msgPrefix(topic), clientv3.WithRev(st.Revision)
	msgs := func(opts ...clientv3.OpOption) clientv3.Op {
		return clientv3.OpGet(prefix+rec.floor, append(opts, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), at)...)
	}
	keys, err := client.Txn(ctx).Then(
		msgs(clientv3.WithCountOnly()),
		msgs(clientv3.WithKeysOnly(), clientv3.WithLimit(1), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend)),
	).Commit()
	if err != nil {
		return Status{}, err
	}
	st.Retained = keys.Responses[0].GetResponseRange().Count
	newest := first(keys.Responses[1])
	if newest == nil {
		return st, nil
	}
	last, err := client.Get(ctx, string(newest.Key), at)
	if err != nil {
		return Status{}, err
	}
	if len(last.Kvs) == 0 {
		return st, nil
	}
	kv := last.Kvs[0]
	st.Last = &Event{Revision: kv.ModRevision, Data: kv.Value, Time: msgTime(prefix, kv.Key), Seq: st.Trimmed + st.Retained}
	return st, nil
}
