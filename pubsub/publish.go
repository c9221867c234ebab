package pubsub

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/names"
)

// Publish appends msg to topic and returns its revision: the etcd revision
// of the write, which orders it among every message of every topic. The
// message is kept as its own key until retention trims it (see KeepLast,
// KeepFor); Publish trims the topic now and then, and a failed trim does
// not fail the Publish. A message is stamped with this machine's time,
// or, if that is behind the topic's floor (the oldest retained message's
// stamp, or so), just above the floor (see the package doc). With
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
	stamp := c.clock()
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
					clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))).
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
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			// This clock is behind the publisher of the floor's
			// message: stamp the key just above the floor.
			floor := strings.TrimPrefix(string(kvs[0].Key), fl)
			above := stampAbove(stamp, floor)
			if !above.After(stamp) {
				return 0, fmt.Errorf("pubsub: %q has a floor marker %q that is not a message key", topic, floor)
			}
			stamp = above
		}
	}
}

func validateTopic(topic string) error {
	if err := names.Validate(topic); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTopic, err)
	}
	return nil
}
