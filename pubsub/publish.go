package pubsub

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/names"
)

// Publish appends msg to topic and returns its revision: the etcd revision
// of the write, which orders it among every message of every topic. The
// message is kept as its own key until retention trims it (see KeepLast,
// KeepFor); Publish trims the topic now and then, and a failed trim does
// not fail the Publish. A message is stamped with this machine's time,
// or, if that is behind the topic's floor (the oldest retained message's
// stamp, or so), just above the floor, and for a minute after that as far
// ahead of this machine's time; a floor more than a minute ahead of it is
// lowered instead (see the package doc). With
// KeepUntilCompaction the message is instead
// kept in etcd's history (see publishLog). A topic holds messages of one
// mode only: Publish fails with ErrRetentionMode, writing nothing, on a
// topic of the other mode.
func (c *Client) Publish(ctx context.Context, topic string, msg []byte) (int64, error) {
	if err := validateTopic(topic); err != nil {
		return 0, err
	}
	if err := names.ValidateValue(string(msg)); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	if c.cfg.untilCompaction {
		return c.publishLog(ctx, topic, msg)
	}
	now := c.clock()
	stamp := now.Add(c.offset(topic, now))
	for {
		key := newMsgKey(topic, stamp)
		// The key is random; requiring it to be new makes a message
		// immutable even in the (negligible) event of a collision. The
		// topic must not be kept until compaction (no mode record), and
		// the key must not sort below the topic's floor (no floor marker
		// at or above it).
		fl := floorPrefix(topic)
		above := fl + strings.TrimPrefix(key, msgPrefix(topic))
		end := clientv3.GetPrefixRangeEnd(fl)
		resp, err := c.etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(modeKey(topic)), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(above), "=", 0).WithRange(end)).
			Then(clientv3.OpPut(key, string(msg))).
			Else(clientv3.OpGet(modeKey(topic), clientv3.WithCountOnly()),
				clientv3.OpGet(above, clientv3.WithRange(end), clientv3.WithKeysOnly(),
					clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
				clientv3.OpGet(trimKey(topic))).
			Commit()
		if err != nil {
			return 0, err
		}
		if resp.Succeeded {
			c.tel.Published.Add(ctx, 1)
			c.maybeTrim(ctx, topic)
			return resp.Header.Revision, nil
		}
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return 0, fmt.Errorf("%w: %q is kept until compaction", ErrRetentionMode, topic)
		}
		kvs := resp.Responses[1].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // a key collision
		}
		// This clock is behind the floor: stamp the key just above it,
		// or, if that is more than maxAhead ahead of this clock (a
		// Client whose clock is ahead set the floor), lower the floor.
		floor := strings.TrimPrefix(string(kvs[0].Key), fl)
		raised := stampAbove(stamp, floor)
		if !raised.After(stamp) {
			return 0, fmt.Errorf("pubsub: %q has a floor marker %q that is not a message key", topic, floor)
		}
		if raised.Sub(now) <= maxAhead {
			stamp = raised
			c.setOffset(topic, now, stamp.Sub(now))
			continue
		}
		rev, ok, err := c.publishLowering(ctx, topic, key, msg, first(resp.Responses[2]))
		if err != nil || ok {
			return rev, err
		}
	}
}

// maxAhead is how far ahead of its clock a Publish stamps a message to keep
// it above the topic's floor; a floor further ahead, set by a Client whose
// clock is ahead, it lowers instead.
const maxAhead = time.Minute

// publishLowering writes msg at key, below the topic's floor, and lowers
// the floor to key, in one transaction that requires the trim record
// (rec, nil if none) unchanged: a floor may always come down, as long as
// the record and the marker move together. ok is false if the record
// changed first (look again).
func (c *Client) publishLowering(ctx context.Context, topic, key string, msg []byte, rec *mvccpb.KeyValue) (rev int64, ok bool, err error) {
	var r trimRecord
	var mod int64 // 0: no record (a marker left without one)
	if rec != nil {
		if r, err = parseTrimRecord(rec.Value); err != nil {
			return 0, false, err
		}
		mod = rec.ModRevision
	}
	low := strings.TrimPrefix(key, msgPrefix(topic))
	r.floor, r.next = low, min(cmp.Or(r.next, low), low)
	fp := floorPrefix(topic)
	resp, err := c.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(trimKey(topic)), "=", mod),
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(modeKey(topic)), "=", 0)).
		Then(clientv3.OpDelete(fp, clientv3.WithRange(fp+low)),
			clientv3.OpDelete(fp+low+"\x00", clientv3.WithRange(clientv3.GetPrefixRangeEnd(fp))),
			clientv3.OpPut(fp+low, ""),
			clientv3.OpPut(trimKey(topic), r.String()),
			clientv3.OpPut(key, string(msg))).
		Commit()
	if err != nil || !resp.Succeeded {
		return 0, false, err
	}
	c.tel.Published.Add(ctx, 1)
	c.maybeTrim(ctx, topic)
	return resp.Header.Revision, true, nil
}

func validateTopic(topic string) error {
	if err := names.Validate(topic); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTopic, err)
	}
	return nil
}

// offsetTTL is how long a Client stamps a topic's messages ahead of its
// clock after its clock was found behind the topic's floor; then it tries
// its own clock again.
const offsetTTL = time.Minute

// offset is how far ahead of its clock, at now, this Client stamps topic's
// messages: the distance its clock was behind the topic's floor. Stamped
// just above the floor instead, every message of a publisher whose clock is
// behind would be the topic's lowest key and hold the floor where it is
// (the next trim's floor is at most its lowest retained key), so trims
// would walk every trimmed message's key above it again.
func (c *Client) offset(topic string, now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.trimState(topic)
	if now.Sub(st.offsetAt) > offsetTTL {
		st.offset = 0
	}
	return st.offset
}

// setOffset records that, at now, topic's messages had to be stamped d
// ahead of this Client's clock.
func (c *Client) setOffset(topic string, now time.Time, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.trimState(topic)
	st.offset, st.offsetAt = max(st.offset, d), now
}
