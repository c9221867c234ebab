package pubsub

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxTrimBatch bounds the deletes of one trim transaction (etcd allows 128
// operations per transaction by default).
const maxTrimBatch = 100

// trimState paces one topic's trims by this Client.
type trimState struct {
	published int       // messages published since the last trim
	last      time.Time // when the last trim started
	running   bool
}

// maybeTrim trims topic when enough messages were published since the last
// trim (a tenth of KeepLast) or enough time passed (an eighth of KeepFor).
func (c *Client) maybeTrim(ctx context.Context, topic string) {
	now := time.Now()
	c.mu.Lock()
	st := c.trims[topic]
	if st == nil {
		st = &trimState{}
		c.trims[topic] = st
	}
	st.published++
	due := false
	if n := c.cfg.keepLast; n > 0 && st.published >= max(1, n/10) {
		due = true
	}
	if d := c.cfg.keepFor; d > 0 && now.Sub(st.last) >= d/8 {
		due = true
	}
	if !due || st.running {
		c.mu.Unlock()
		return
	}
	st.running, st.published, st.last = true, 0, now
	c.mu.Unlock()

	if _, err := c.Trim(ctx, topic); err != nil {
		c.cfg.logger.Warn("pubsub: trim failed", "topic", topic, "err", err)
	}
	c.mu.Lock()
	st.running = false
	c.mu.Unlock()
}

// Trim deletes the messages of topic that retention no longer keeps and
// returns how many it deleted. Publish calls it now and then; call it
// yourself to trim by age a topic nobody publishes to.
// It deletes nothing from a topic kept until compaction, nor with a Client
// made with KeepUntilCompaction.
//
// Trimming always deletes the oldest messages first (by revision), and
// records the newest trimmed revision and the running count in the topic's
// trim record, in the same transaction: that is what lets a subscriber
// tell exactly which messages it missed.
func (c *Client) Trim(ctx context.Context, topic string) (int, error) {
	if err := validateTopic(topic); err != nil {
		return 0, err
	}
	total := 0
	for {
		n, more, err := c.trimOnce(ctx, topic)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// trimOnce deletes up to maxTrimBatch messages; more reports that it should
// be called again (more to trim, or a concurrent trim won the race).
func (c *Client) trimOnce(ctx context.Context, topic string) (n int, more bool, err error) {
	prefix := msgPrefix(topic)
	resp, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(trimKey(topic)),
		clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)),
	).Commit()
	if err != nil {
		return 0, false, err
	}
	var rec trimRecord
	var recMod int64
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if rec, err = parseTrimRecord(kvs[0].Value); err != nil {
			return 0, false, err
		}
		recMod = kvs[0].ModRevision
	}
	keys := resp.Responses[1].GetResponseRange().Kvs
	k := 0
	if c.cfg.keepLast > 0 && len(keys) > c.cfg.keepLast {
		k = len(keys) - c.cfg.keepLast
	}
	if c.cfg.keepFor > 0 {
		// Stop at the first message young enough, even if a later one
		// carries an older stamp (publishers' clocks differ): trimming
		// must delete a prefix of the topic in revision order.
		cutoff := time.Now().Add(-c.cfg.keepFor)
		for k < len(keys) && msgTime(prefix, keys[k].Key).Before(cutoff) {
			k++
		}
	}
	if k == 0 {
		return 0, false, nil
	}
	if k > maxTrimBatch {
		k, more = maxTrimBatch, true
	}
	ops := make([]clientv3.Op, 0, k+1)
	for _, kv := range keys[:k] {
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	rec = trimRecord{rev: keys[k-1].CreateRevision, count: rec.count + int64(k)}
	ops = append(ops, clientv3.OpPut(trimKey(topic), rec.String()))
	tr, err := c.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(trimKey(topic)), "=", recMod)).
		Then(ops...).
		Commit()
	if err != nil {
		return 0, false, err
	}
	if !tr.Succeeded {
		return 0, true, nil // another trim went first: look again
	}
	return k, more, nil
}
