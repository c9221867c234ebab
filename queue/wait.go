package queue

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Consumer claims items of a queue under one session's lease, as a lock or
// a semaphore binds its session: a claim is held under that lease and is
// delivered again if the session is lost. Producers need no session and use
// the Queue itself. A Consumer is safe for concurrent use.
type Consumer struct {
	q *Queue
	s *concurrency.Session
}

// Consumer returns the queue's consumer on session s.
func (q *Queue) Consumer(s *concurrency.Session) *Consumer { return &Consumer{q: q, s: s} }

// Claim blocks until it claims an item, ctx ends (ctx.Err()) or the
// session is lost (its error). Blocked consumers wait in line: only the
// first watches the queue, so an enqueue wakes one consumer and costs a
// constant number of requests however many are waiting. The first in line
// also returns the items of consumers whose sessions were lost to the queue.
func (c *Consumer) Claim(ctx context.Context) (*Claim, error) { return c.q.claim(ctx, c.s) }

// TryClaim claims the first ready item, or returns ErrEmpty at once. Items
// of dead consumers are returned to the queue first, at their place (a
// queue's consumers look for them about once a second between them, and a
// Queue value at its first claim).
func (c *Consumer) TryClaim(ctx context.Context) (*Claim, error) { return c.q.tryClaim(ctx, c.s) }

func (q *Queue) claim(ctx context.Context, s *concurrency.Session) (*Claim, error) {
	ctx, op := q.telFor(s).Begin(ctx, q.scopeFor(s), "concord.queue.Claim")
	c, err := q.claimOp(ctx, &op, s)
	var token int64
	if c != nil {
		token = int64(c.Token())
	}
	op.End(err, false, token)
	return c, err
}

func (q *Queue) claimOp(ctx context.Context, op *telemetry.Op, s *concurrency.Session) (*Claim, error) {
	c, _, err := q.claimReady(ctx, s)
	if err != nil || c != nil {
		return c, err
	}
	lineKey := q.pfx + lineDir
	cs := (*session.Session)(s)
	t, err := line.Join(ctx, cs, cs.LineKey(lineKey), "", lineKey, 1)
	if err != nil {
		return nil, err
	}
	defer t.Abandon()            // leave the line: the next consumer moves up
	op.Joined(max(t.Ahead(), 1)) // the queue is empty: waiting for an item
	if err := t.Wait(ctx, 1); err != nil {
		return nil, err
	}
	backoff := retry.Request.New()
	for {
		// The claim leaves the line in its own write.
		c, err := q.firstInLine(ctx, s, t.DeleteOp())
		if c != nil {
			t.Deleted()
		}
		if err != nil || c != nil {
			return c, err
		}
		// The watch broke (a lost leader, a reconnect): look again soon.
		if !retry.Sleep(ctx, backoff.NextBackOff()) {
			return nil, ctx.Err()
		}
	}
}

// firstInLine watches the queue until it claims an item. It returns nil, nil
// when the watch broke and must be reopened.
func (q *Queue) firstInLine(ctx context.Context, s *concurrency.Session, leave clientv3.Op) (*Claim, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := q.client.Watch(wctx, q.pfx, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	// Wait until the watch is live, so nothing enqueued from here on is
	// missed, then look.
	for created := false; !created; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.Done():
			return nil, s.Err()
		case wr, ok := <-wch:
			if !ok || wr.Canceled {
				return nil, ctx.Err()
			}
			created = wr.Created
		}
	}
	if _, err := q.requeueOrphans(ctx, false); err != nil {
		return nil, err
	}
	for {
		c, due, err := q.claimReady(ctx, s, leave)
		if err != nil || c != nil {
			return c, err
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if !due.IsZero() {
			timer = time.NewTimer(time.Until(due))
			fire = timer.C
		}
		live, arrived, err := q.awaitChange(ctx, s, wch, fire)
		if timer != nil {
			timer.Stop()
		}
		if err != nil || !live {
			return nil, err
		}
		// Claim what just arrived straight from the event, without reading
		// the queue first; a lost race falls back to the read above.
		var seen int64 // every ready item put up to here arrived in events
		for _, kv := range arrived {
			seen = max(seen, kv.ModRevision)
		}
		from := &view{rev: seen, front: q.frontSeen()}
		for _, kv := range arrived {
			c, _, err := q.claimOne(ctx, s, kv, from, leave)
			if err != nil || c != nil {
				return c, err
			}
		}
	}
}

// awaitChange waits for an event that may make an item claimable: an item
// put (ready or delayed), a claim deleted (its item may be an orphan), or a
// delayed item falling due. It reports false when the watch broke and must
// be reopened, and returns the ready items that arrived, in delivery order.
func (q *Queue) awaitChange(ctx context.Context, s *concurrency.Session, wch clientv3.WatchChan, timer <-chan time.Time) (bool, []*mvccpb.KeyValue, error) {
	for {
		select {
		case <-ctx.Done():
			return false, nil, ctx.Err()
		case <-s.Done():
			return false, nil, s.Err()
		case <-timer:
			return true, nil, nil
		case wr, ok := <-wch:
			if !ok || wr.Canceled || wr.Err() != nil {
				return false, nil, ctx.Err()
			}
			wake := false
			var arrived []*mvccpb.KeyValue
			// The revisions at which sessions that claimed items ended:
			// their claim keys went with their marks, and requeueDead
			// returns their items.
			var ended []int64
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE && strings.HasPrefix(string(ev.Kv.Key), q.pfx+aliveDir) {
					ended = append(ended, ev.Kv.ModRevision)
				}
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				switch {
				case ev.Type == mvccpb.PUT && strings.HasPrefix(key, q.pfx+readyDir):
					wake = true
					arrived = append(arrived, ev.Kv)
				case ev.Type == mvccpb.PUT && strings.HasPrefix(key, q.pfx+delayedDir):
					wake = true
				case ev.Type == mvccpb.DELETE && strings.HasPrefix(key, q.pfx+aliveDir):
					// A session that claimed items is gone. Best effort:
					// the next look returns them otherwise.
					if _, err := q.requeueDead(ctx, strings.TrimPrefix(key, q.pfx+aliveDir)); err != nil {
						q.log.Debug("concord queue: requeue of a lost session's items failed; the next look returns them", "queue", q.name, "key", key, "err", err)
					}
				case ev.Type == mvccpb.DELETE && strings.HasPrefix(key, q.pfx+claimDir) &&
					!slices.Contains(ended, ev.Kv.ModRevision) && !q.settled(wr.Events, q.idOfClaim(key)):
					// A claim gone without its item or its session: one of
					// a version that kept the item under p/. (Items under
					// o/ whose claim went while their session lives are
					// returned by a whole look, every 30 s; so is a p/ item
					// whose claim went with a session mark, a lease an
					// older version's claim and this version's share.)
					id := q.idOfClaim(key)
					if _, err := q.requeueOrphan(ctx, q.pendingKey(id), id); err != nil {
						q.log.Debug("concord queue: requeue of an orphan failed; the next look returns it", "queue", q.name, "key", key, "err", err)
					}
				}
			}
			if wake {
				slices.SortFunc(arrived, func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Key, b.Key) })
				return true, arrived, nil
			}
		}
	}
}

// settled reports whether evs delete a claimed item id's key under o/ (an
// ack or a nack deleted it with its claim).
func (q *Queue) settled(evs []*clientv3.Event, id string) bool {
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		if ev.Type == mvccpb.DELETE && strings.HasPrefix(k, q.pfx+ownedDir) && q.idOfPending(k) == id {
			return true
		}
	}
	return false
}

// requeueOrphans returns every claimed item without a claim (its
// consumer's lease expired, or its claim key was deleted) to the queue, and
// says how many it returned. Each look writes the sweep key (sweepName);
// with shared set it looks only if the key is as this Queue value last saw
// it (no other value looked since), unless it has not seen the key yet.
//
// A look reads the sessions that claimed items (h/ and a/), not the items:
// etcd visits every key deleted since its last compaction in a range read,
// and every acked item deleted one under o/ and one under c/. Only a
// session whose lease is gone has its items (o/<lease>/) read and returned,
// once. Every slowEvery between a queue's consumers a look is whole (see
// slowOps): it also reads every claimed item and claim, for items whose
// claim went while their session lives and items claimed by versions
// before o/ (under p/), and below the queue's front.
func (q *Queue) requeueOrphans(ctx context.Context, shared bool) (int, error) {
	sk := q.pfx + sweepName
	// The sweep key holds when a look was last whole.
	front := q.frontSeen()
	now, last := time.Now().UnixNano(), q.lastSlow.Load()
	slow := now-last >= int64(q.slowEvery)
	if slow {
		last = now
	}
	look := []clientv3.Op{
		clientv3.OpPut(sk, strconv.FormatInt(last, 10)),
		clientv3.OpGet(q.pfx+holderDir, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(q.pfx+aliveDir, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	}
	if slow {
		look = append(look, q.slowOps(front)...)
	}
	txn := q.client.Txn(ctx)
	if seen := q.sweepSeen.Load(); shared && seen >= 0 {
		txn = txn.If(clientv3.Compare(clientv3.ModRevision(sk), "=", seen)).Then(look...).Else(clientv3.OpGet(sk))
	} else {
		txn = txn.Then(look...)
	}
	resp, err := txn.Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		var rev int64 // missing (deleted with the queue): 0
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			rev = kvs[0].ModRevision
			// A look elsewhere was whole then (not later than now: clocks
			// differ).
			if t, err := strconv.ParseInt(string(kvs[0].Value), 10, 64); err == nil && min(t, now) > q.lastSlow.Load() {
				q.lastSlow.Store(min(t, now))
			}
		}
		q.sweepSeen.Store(rev)
		return 0, nil
	}
	q.sweepSeen.Store(resp.Header.Revision)
	alive := map[string]bool{}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		alive[strings.TrimPrefix(string(kv.Key), q.pfx+aliveDir)] = true
	}
	n := 0
	dead := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if l := strings.TrimPrefix(string(kv.Key), q.pfx+holderDir); !alive[l] {
			dead[l] = true
			moved, err := q.requeueDead(ctx, l)
			n += moved
			if err != nil {
				return n, err
			}
		}
	}
	if !slow {
		return n, nil
	}
	q.lastSlow.Store(now)
	moved, err := q.slowLook(ctx, resp.Responses[3:], dead)
	return n + moved, err
}

// slowOps are the reads a whole look adds (see requeueOrphans): every
// claimed item under p/ and o/ and every claim, keys only, and, when this
// Queue value has read the front, whether a ready item sorts before it,
// which no write of this version leaves (an older one's does: see
// frontName). Each visits every key of its kind deleted since etcd's last
// compaction.
func (q *Queue) slowOps(front string) []clientv3.Op {
	ops := []clientv3.Op{
		clientv3.OpGet(q.pfx+pendingDir, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(q.pfx+ownedDir, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(q.pfx+claimDir, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	}
	if front != "" {
		dir := q.pfx + readyDir
		ops = append(ops, clientv3.OpGet(dir, clientv3.WithRange(dir+front), clientv3.WithLimit(1), clientv3.WithKeysOnly()))
	}
	return ops
}

// slowLook acts on the answers to slowOps: it returns the claimed items
// without a claim (but those of the dead sessions, returned already), and
// lowers the front to a ready item below it.
func (q *Queue) slowLook(ctx context.Context, rs []*etcdserverpb.ResponseOp, dead map[string]bool) (int, error) {
	if len(rs) > 3 {
		if kvs := rs[3].GetResponseRange().Kvs; len(kvs) > 0 {
			key := string(kvs[0].Key)
			q.log.Warn("concord queue: a ready item sorts before the queue's front (written by a process without it?); lowering the front", "queue", q.name, "key", key)
			if _, err := q.client.Txn(ctx).Then(q.lowerOp(key)).Commit(); err != nil {
				return 0, err
			}
		}
	}
	claimed := map[string]bool{}
	for _, kv := range rs[2].GetResponseRange().Kvs {
		claimed[q.idOfClaim(string(kv.Key))] = true
	}
	var orphans []*mvccpb.KeyValue
	for _, r := range rs[:2] {
		for _, kv := range r.GetResponseRange().Kvs {
			key := string(kv.Key)
			if claimed[q.idOfPending(key)] {
				continue
			}
			if rest, ok := strings.CutPrefix(key, q.pfx+ownedDir); ok {
				if l, _, _ := strings.Cut(rest, "/"); dead[l] {
					continue // returned above
				}
			}
			orphans = append(orphans, kv)
		}
	}
	return q.requeueEach(ctx, orphans)
}

// requeueEach requeues each claimed item of kvs (keys under o/ or p/) that
// has no claim, and says how many it returned.
func (q *Queue) requeueEach(ctx context.Context, kvs []*mvccpb.KeyValue) (int, error) {
	n := 0
	for _, kv := range kvs {
		key := string(kv.Key)
		moved, err := q.requeueOrphan(ctx, key, q.idOfPending(key))
		if err != nil {
			return n, err
		}
		if moved {
			n++
		}
	}
	return n, nil
}

// requeueDead returns the items claimed by the session with lease l (in
// leaseName's form), whose lease is gone, to the queue, and then forgets
// the session (its h/ key). It says how many it returned.
func (q *Queue) requeueDead(ctx context.Context, l string) (int, error) {
	dir := q.pfx + ownedDir + l + "/"
	resp, err := q.client.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, err
	}
	n, err := q.requeueEach(ctx, resp.Kvs)
	if err != nil {
		return n, err
	}
	// Forget it once nothing of it is left (a claim of it whose answer was
	// lost cannot land: its lease is gone).
	_, err = q.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(q.pfx+aliveDir+l), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(dir).WithPrefix(), "=", 0)).
		Then(clientv3.OpDelete(q.pfx + holderDir + l)).
		Commit()
	return n, err
}

// requeueOrphan puts the claimed item id, kept at pk, back in line (at its
// original place) if nobody claims it; a value that is not an item goes to
// the dead letters.
func (q *Queue) requeueOrphan(ctx context.Context, pk, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	ck := q.claimKey(id)
	resp, err := q.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(ck), "=", 0)).
		Then(clientv3.OpGet(pk)).Commit()
	if err != nil || !resp.Succeeded {
		return false, err
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return false, nil // acked or nacked: nothing to do
	}
	var back []clientv3.Op
	if m, payload, err := decode(kvs[0].Value); err == nil {
		back = q.putItemOps(q.placeKey(m), encode(m, payload))
	} else {
		// Not an item (written by hand, or by another version): to the
		// dead letters, as a claim would move it, not read again at
		// every look.
		back = []clientv3.Op{clientv3.OpPut(q.deadKey(id), string(kvs[0].Value))}
		q.log.Warn("concord queue: a claimed value that is not an item goes to the dead letters", "queue", q.name, "key", pk, "err", err)
	}
	put, err := q.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ck), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(pk), "=", kvs[0].CreateRevision)).
		Then(append([]clientv3.Op{clientv3.OpDelete(pk)}, back...)...).
		Commit()
	if err != nil {
		return false, err
	}
	return put.Succeeded, nil
}
