package pubsub

// Topics kept until compaction (KeepUntilCompaction): the messages are the
// history of one key, T/.log, so the library deletes none and etcd's
// compaction is their retention. A subscription reads them with its watch
// (concurrency.WatchFrom, from the revision after the last one it
// delivered); when that history is compacted it reports what it lost as a
// Gap and goes on from the oldest revision etcd still has.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/watch"
)

// publishLog appends msg to a topic kept until compaction: a Put of its log
// key, on condition that the topic is in that mode. The topic's first
// message also writes the mode record, on condition that the topic has
// neither a message key nor a trim record (was never used in the other
// mode). Either way it is one transaction, and nothing is written when the
// topic is in the other mode.
func (c *Client) publishLog(ctx context.Context, topic string, msg []byte) (int64, error) {
	mode, log := modeKey(topic), logKey(topic)
	val := logValue(time.Now(), msg)
	claim := clientv3.OpTxn(
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(mode), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(trimKey(topic)), "=", 0),
			// True on an empty range: no message key at all.
			clientv3.Compare(clientv3.CreateRevision(msgPrefix(topic)), "=", 0).WithPrefix(),
		},
		[]clientv3.Op{clientv3.OpPut(mode, modeLog), clientv3.OpPut(log, val)},
		nil)
	resp, err := c.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(mode), "=", modeLog)).
		Then(clientv3.OpPut(log, val)).
		Else(claim).
		Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded && !resp.Responses[0].GetResponseTxn().Succeeded {
		return 0, fmt.Errorf("%w: %q keeps a key per message", ErrRetentionMode, topic)
	}
	c.tel.Published.Add(ctx, 1)
	return resp.Header.Revision, nil
}

// catchUpLog is catchUp for a topic kept until compaction, whose log key
// was cur at revision head (nil: not written yet). It reads no message
// (the watch that follows delivers them) but checks that the history after
// sub.rev still exists and learns sub.count if it was not known. When that
// history is compacted it reports the lost messages as a gap, delivers the
// oldest message still readable and moves sub.rev to the oldest revision
// etcd keeps, where the watch can start.
func (sub *subscriber) catchUpLog(ctx context.Context, head int64, cur *mvccpb.KeyValue) error {
	switch {
	case sub.rev > head:
		// A start beyond the current revision: messages up to it will be
		// skipped, and nobody counted them.
		sub.count = -1
		return nil
	case sub.rev == head:
		sub.count = version(cur)
		return nil
	}
	start := sub.rev + 1 // 1 for Oldest
	at, err := sub.logAt(ctx, start)
	if err == nil {
		if sub.oldest {
			sub.oldest = false
			sub.count = 0
		} else if sub.count < 0 {
			sub.count = version(at) // the messages <= start
			if at != nil && at.ModRevision == start {
				sub.count--
			}
		}
		return nil
	}
	if !errors.Is(err, watch.ErrCompacted) {
		return err
	}
	oldest, at, err := sub.oldestRev(ctx, start, head, cur)
	if err != nil {
		return err
	}
	return sub.skipTo(ctx, oldest, at)
}

// skipTo moves a subscription whose history after sub.rev was compacted to
// oldest, the oldest revision in etcd's history, where the log key was at
// (nil: not written yet). Etcd keeps at, the newest message up to oldest:
// it is delivered, and the messages after sub.rev and before it are a gap
// (none for Oldest: what was compacted before it began is not lost to it).
func (sub *subscriber) skipTo(ctx context.Context, oldest int64, at *mvccpb.KeyValue) error {
	if at == nil {
		sub.oldest = false
		sub.rev, sub.count = oldest, 0
		return nil
	}
	if sub.oldest {
		sub.oldest = false
		sub.rev, sub.count = at.ModRevision-1, at.Version-1
	}
	if at.ModRevision > sub.rev {
		lost := int64(-1) // not known: the history to count them is gone
		switch {
		case sub.count >= 0:
			lost = at.Version - 1 - sub.count
		case at.CreateRevision > sub.rev:
			lost = at.Version - 1 // the topic began after sub.rev
		}
		if lost != 0 && at.ModRevision-1 > sub.rev {
			g := &Gap{From: sub.rev + 1, To: at.ModRevision - 1, Count: max(lost, -1)}
			if !sub.s.Send(ctx, Event{Gap: g, Seq: at.Version - 1}) {
				return ctx.Err()
			}
			sub.c.tel.Gaps.Add(ctx, 1)
			sub.gaps++
		}
		sub.rev, sub.count = at.ModRevision-1, at.Version-1
		if !sub.deliver(ctx, []*mvccpb.KeyValue{at}) {
			return ctx.Err()
		}
	}
	sub.rev, sub.count = oldest, at.Version
	return nil
}

// oldestRev finds the oldest revision etcd still keeps, between lo (known
// compacted) and hi (readable, the log key then being at), and the log key
// there. Etcd reports the compacted revision only to a watch, and WatchFrom
// does not pass it on, so it searches by reading the key at a revision:
// log2(hi-lo) reads, and only after a compaction overtook the subscriber.
// Compaction may move on meanwhile; the watch from the result then fails
// and the subscription looks again.
func (sub *subscriber) oldestRev(ctx context.Context, lo, hi int64, at *mvccpb.KeyValue) (int64, *mvccpb.KeyValue, error) {
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		kv, err := sub.logAt(ctx, mid)
		switch {
		case errors.Is(err, watch.ErrCompacted):
			lo = mid
		case err != nil:
			return 0, nil, err
		default:
			hi, at = mid, kv
		}
	}
	return hi, at, nil
}

// logAt reads the log key at rev (nil if it did not exist then); reading a
// compacted revision fails with watch.ErrCompacted.
func (sub *subscriber) logAt(ctx context.Context, rev int64) (*mvccpb.KeyValue, error) {
	rctx, cancel := sub.request(ctx)
	defer cancel()
	resp, err := sub.c.etcd.Get(rctx, sub.logKey, clientv3.WithRev(rev))
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil, watch.ErrCompacted
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0], nil
}

// version is the number of messages a log key holding kv has had.
func version(kv *mvccpb.KeyValue) int64 {
	if kv == nil {
		return 0
	}
	return kv.Version
}
