package pubsub

import (
	"context"
	"fmt"
	"time"

	"github.com/concordkit/concord/concurrency"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Publish appends msg to topic and returns its revision: the etcd revision
// of the write, which orders it among every message of every topic. The
// message is kept as its own key until retention trims it (see KeepLast,
// KeepFor); Publish trims the topic now and then, and a failed trim does
// not fail the Publish.
func (c *Client) Publish(ctx context.Context, topic string, msg []byte) (int64, error) {
	if err := validateTopic(topic); err != nil {
		return 0, err
	}
	if err := concurrency.ValidateValue(string(msg)); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	for {
		key := newMsgKey(topic, time.Now())
		// The key is random; requiring it to be new makes a message
		// immutable even in the (negligible) event of a collision.
		resp, err := c.etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(msg))).
			Commit()
		if err != nil {
			return 0, err
		}
		if resp.Succeeded {
			c.maybeTrim(ctx, topic)
			return resp.Header.Revision, nil
		}
	}
}

func validateTopic(topic string) error {
	if err := concurrency.ValidateName(topic); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTopic, err)
	}
	return nil
}
