package pubsub

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

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
	floor     string        // the floor in the last trim record read
	known     bool          // floor was read
	reads     int           // trims begun (see fullReadEvery)
	offset    time.Duration // see Client.offset
	offsetAt  time.Time     // when offset was set
}

// maybeTrim trims topic when enough messages were published since the last
// trim (a tenth of KeepLast) or enough time passed (an eighth of KeepFor).
func (c *Client) maybeTrim(ctx context.Context, topic string) {
	now := time.Now()
	c.mu.Lock()
	st := c.trimState(topic)
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
// Trimming deletes the oldest messages first (by revision; see the
// package doc for messages of older versions below the floor), and
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

// fullReadEvery: one trim in this many by a Client reads the whole topic,
// not from its floor, so a message key below the floor (written by a
// publisher of a version before floors, whose clock was behind) is found:
// the first such trim that deletes anything deletes it first (its revision
// is the oldest), though trims from the floor may have deleted later
// messages before it.
var fullReadEvery = 64

// afterTrimRead, if set, runs between a trim's read and its transaction
// (tests).
var afterTrimRead func()

// readFrom returns the message key suffix topic's next trim reads from:
// the floor this Client last saw (read from the trim record first if it
// has seen none), or "" for a whole read.
func (c *Client) readFrom(ctx context.Context, topic string) (string, error) {
	c.mu.Lock()
	st := c.trimState(topic)
	st.reads++
	whole, known, floor := st.reads%fullReadEvery == 0, st.known, st.floor
	c.mu.Unlock()
	if whole {
		return "", nil
	}
	if known {
		return floor, nil
	}
	resp, err := c.etcd.Get(ctx, trimKey(topic))
	if err != nil {
		return "", err
	}
	var rec trimRecord
	if len(resp.Kvs) > 0 {
		if rec, err = parseTrimRecord(resp.Kvs[0].Value); err != nil {
			return "", err
		}
	}
	c.sawFloor(topic, rec.floor)
	return rec.floor, nil
}

// sawFloor records the floor of topic's trim record.
func (c *Client) sawFloor(topic, floor string) {
	c.mu.Lock()
	st := c.trimState(topic)
	st.floor, st.known = floor, true
	c.mu.Unlock()
}

// trimState returns topic's trim state; c.mu must be held.
func (c *Client) trimState(topic string) *trimState {
	st := c.trims[topic]
	if st == nil {
		st = &trimState{}
		c.trims[topic] = st
	}
	return st
}

// trimOnce deletes up to maxTrimBatch messages; more reports that it should
// be called again (more to trim, or a concurrent trim won the race).
//
// It reads the message keys from the floor (keys.go) and raises the floor
// to the record's next: the lowest key the last trim kept, below which
// that trim left tombstones only. A message written since that trim with
// a key below next (its publisher's clock behind) is kept here, and the
// floor goes no higher than the lowest key kept. A message written since
// this trim's read with a key below the new floor would be skipped by
// every later trim: the transaction requires that none was (a comparison
// over the keys from where the read began to the new floor, which
// normally holds only tombstones, so it reads no value).
func (c *Client) trimOnce(ctx context.Context, topic string) (n int, more bool, err error) {
	prefix := msgPrefix(topic)
	from, err := c.readFrom(ctx, topic)
	if err != nil {
		return 0, false, err
	}
	resp, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(trimKey(topic)),
		clientv3.OpGet(prefix+from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithKeysOnly(),
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
	c.sawFloor(topic, rec.floor)
	if rec.floor < from {
		// The floor came down, or an older version's trim dropped it
		// from the record: read again from it.
		return 0, true, nil
	}
	keys := resp.Responses[1].GetResponseRange().Kvs
	now := c.clock()
	now = now.Add(c.offset(topic, now))
	k := 0
	if c.cfg.keepLast > 0 && len(keys) > c.cfg.keepLast {
		k = len(keys) - c.cfg.keepLast
	}
	if c.cfg.keepFor > 0 {
		// Stop at the first message young enough, even if a later one
		// carries an older stamp (publishers' clocks differ): trimming
		// must delete a prefix of the topic in revision order.
		cutoff := now.Add(-c.cfg.keepFor)
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
	suffix := func(kv *mvccpb.KeyValue) string { return strings.TrimPrefix(string(kv.Key), prefix) }
	ops := make([]clientv3.Op, 0, k+3)
	next := ""
	for _, kv := range keys[:k] {
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		next = max(next, suffix(kv)) // if nothing is kept
	}
	floor := cmp.Or(rec.next, rec.floor)
	if kept := keys[k:]; len(kept) > 0 {
		next = suffix(kept[0])
		for _, kv := range kept[1:] {
			next = min(next, suffix(kv))
		}
		floor = min(floor, next)
	}
	// Neither above this Client's now (as its Publish stamps it): a
	// message stamped by a clock ahead must not set the floor there, or
	// every other publisher would stamp its messages that far ahead (or,
	// past maxAhead, lower the floor).
	limit := fmt.Sprintf("%016x", uint64(now.UnixNano()))
	next, floor = min(next, limit), min(floor, limit)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(trimKey(topic)), "=", recMod)}
	if floor > from {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(prefix+from), "<", resp.Header.Revision+1).
			WithRange(prefix+floor))
	}
	if floor != rec.floor {
		fp := floorPrefix(topic)
		if rec.floor != "" {
			ops = append(ops, clientv3.OpDelete(fp+rec.floor))
		} else {
			// No floor in the record: drop any marker an older
			// version's trim left behind (it rewrote the record).
			ops = append(ops, clientv3.OpDelete(fp, clientv3.WithRange(fp+floor)),
				clientv3.OpDelete(fp+floor+"\x00", clientv3.WithRange(clientv3.GetPrefixRangeEnd(fp))))
		}
		ops = append(ops, clientv3.OpPut(fp+floor, ""))
	}
	if afterTrimRead != nil {
		afterTrimRead()
	}
	// The record's rev never goes back: a whole read may find a key an
	// older version wrote below the floor after trims from the floor went
	// past its revision; deleted, it is counted, and every message up to
	// rec.rev is then deleted again.
	rec = trimRecord{rev: max(rec.rev, keys[k-1].CreateRevision), count: rec.count + int64(k), floor: floor, next: next}
	ops = append(ops, clientv3.OpPut(trimKey(topic), rec.String()))
	tr, err := c.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, false, err
	}
	if !tr.Succeeded {
		return 0, true, nil // another trim went first, or a key below the floor: look again
	}
	c.sawFloor(topic, floor)
	return k, more, nil
}
