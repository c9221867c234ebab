package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// candidates is how many ready items one read fetches, so consumers racing
// for the head of the queue can fall back without another read.
const candidates = 8

// contendedCandidates is how many a read fetches while this Queue value's
// claims are spreading out after a lost race: 16 consumers picking at
// random among 8 items mostly collide again, among 32 mostly not.
const contendedCandidates = 32

// samePriority is how many of ready (in delivery order) share the first
// one's priority: a claim spreading out picks among those only, never a
// lower priority while a higher one is ready.
func samePriority(ready []*mvccpb.KeyValue) int {
	pp := func(kv *mvccpb.KeyValue) []byte {
		k := kv.Key
		if i := bytes.LastIndexByte(k, '/'); i >= 0 {
			return k[:i] // the priority's directory
		}
		return k
	}
	first := pp(ready[0])
	n := 1
	for n < len(ready) && bytes.Equal(pp(ready[n]), first) {
		n++
	}
	return n
}

// readyLimit is how many ready items a read fetches now.
func (q *Queue) readyLimit() int64 {
	if q.contended.Load() > 0 {
		return contendedCandidates
	}
	return candidates
}

// contendedClaims is how many claims after a lost race start at a random
// candidate instead of the first: racing consumers then mostly take
// different items, while a lone consumer keeps strict order.
const contendedClaims = 16

// Claim is an item delivered to one consumer: a held resource. No other live
// consumer holds the same item. Done closes when the claim is lost (the
// consumer's session is lost or the claim is deleted); the item is then
// delivered again. Ack and Nack are fenced: they fail with ErrClaimLost once
// the claim is lost, changing nothing. A Claim is safe for concurrent use.
type Claim struct {
	q       *Queue
	s       *concurrency.Session
	m       meta
	payload []byte
	held    *hold.Hold
	tel     *telemetry.Set
	name    string    // the queue's name attribute ("" without it)
	at      time.Time // when it was claimed
	pk      string    // where the item is kept while claimed (ownedKey)
	next    *view     // the items to claim with its ack, and their view's revision; see AckNext

	mu   sync.Mutex
	done bool
}

// ID is the item's id (as returned by Enqueue).
func (c *Claim) ID() string { return c.m.ID }

// Payload is the item's payload.
func (c *Claim) Payload() []byte { return c.payload }

// Priority is the item's priority.
func (c *Claim) Priority() int { return c.m.Priority }

// Attempts is how many times the item has been delivered, this one included.
func (c *Claim) Attempts() int { return c.m.Attempts }

// Enqueued is when the item was first enqueued.
func (c *Claim) Enqueued() time.Time { return time.Unix(0, c.m.Enqueued) }

// Token is the claim's fencing token; a redelivery has a higher one.
func (c *Claim) Token() concurrency.Token { return c.held.Token() }

// Done is closed when the claim is lost or settled (acked or nacked).
func (c *Claim) Done() <-chan struct{} { return c.held.Done() }

// Err says why Done closed.
func (c *Claim) Err() error { return c.held.Err() }

// Guard makes etcd writes conditional on still holding the claim (use it
// for checkpoints of the item's progress).
func (c *Claim) Guard() concurrency.Guard { return c.held.Guard() }

// Ack removes the item for good, together with ops (for example
// checkpoint.DeleteOp of the task's checkpoint), in one transaction that
// succeeds only while the claim is held. It is idempotent.
func (c *Claim) Ack(ctx context.Context, ops ...clientv3.Op) error {
	_, _, err := c.settle(ctx, true, c.ackOps(ops), nil)
	return err
}

func (c *Claim) ackOps(ops []clientv3.Op) []clientv3.Op {
	return append([]clientv3.Op{
		clientv3.OpDelete(c.q.claimKey(c.m.ID)),
		clientv3.OpDelete(c.pk),
	}, ops...)
}

// AckNext acks the item as Ack does (with ops) and claims the next ready
// item for the same session, as TryClaim does. When one of the items that
// were next in line when this one was claimed (three, tried in turn) is
// still free, both are one transaction: a worker that takes items one
// after another makes one request per item instead of two. It returns ErrEmpty, the ack made, when
// no item is ready (wait in Consumer.Claim then). Any other error claimed
// nothing; it is the ack's, or the claim's that followed a made ack: Ack
// then tells them apart (nil once the ack was made, as Ack is idempotent).
func (c *Claim) AckNext(ctx context.Context, ops ...clientv3.Op) (*Claim, error) {
	q, s := c.q, c.s
	ctx, op := q.telFor(s).Begin(ctx, q.scopeFor(s), "concord.queue.AckNext")
	next, err := c.ackNext(ctx, ops)
	var token int64
	if next != nil {
		token = int64(next.Token())
	}
	op.End(err, errors.Is(err, ErrEmpty), token)
	return next, err
}

func (c *Claim) ackNext(ctx context.Context, ops []clientv3.Op) (*Claim, error) {
	q, s := c.q, c.s
	if q.sweepDue() {
		// As claimReady does: a worker whose next claims all land here
		// must still return the items of dead consumers.
		// A failed look does not keep the ack from being made: the next
		// look (a second on) tries again.
		if _, err := q.requeueOrphans(ctx, true); err != nil {
			q.log.Debug("concord queue: look for orphans failed; the next one retries", "queue", q.name, "err", err)
		}
	}
	// The claims of the next items, nested in the ack's transaction, each
	// in the one before's else: the first whose item is as it was read
	// lands, and no other.
	var cts []*claimTxn
	if v := c.next; v != nil {
		for _, kv := range v.ready {
			one := &view{ready: []*mvccpb.KeyValue{kv}, rev: v.rev, front: v.front}
			ct := q.claimTxnOf(s, kv, one)
			if ct == nil || ct.m.ID == c.m.ID {
				break // an item for the dead letters: claimReady moves it
			}
			cts = append(cts, ct)
		}
	}
	var extra []clientv3.Op
	if len(cts) > 0 {
		extra = []clientv3.Op{claimChain(cts)}
	}
	resp, head, err := c.settle(ctx, true, c.ackOps(ops), extra)
	if err != nil {
		if !errors.Is(err, ErrClaimLost) {
			// At once: each undo may wait undoTimeout for an etcd
			// that does not answer.
			var wg sync.WaitGroup
			for _, ct := range cts {
				wg.Go(func() { q.undoClaim(ctx, s, ct) })
			}
			wg.Wait()
		}
		return nil, err
	}
	var ct *claimTxn
	if len(cts) > 0 && resp != nil {
		ct = landed(cts, resp.Responses[len(ops)+2].GetResponseTxn())
	}
	if ct != nil {
		next := q.newClaim(ctx, s, ct, resp.Header.Revision)
		if head != nil { // read after this claim, in the same transaction
			q.takeView()
			next.next = q.candidate(head, nil)
		}
		return next, nil
	}
	next, _, err := q.claimReady(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("queue: acked %s; claiming the next item: %w", c.m.ID, err)
	}
	if next == nil {
		return nil, ErrEmpty
	}
	return next, nil
}

// Nack returns the item to the queue, claimable again after delay (0: at
// once, at its original place in line).
func (c *Claim) Nack(ctx context.Context, delay time.Duration) error {
	if delay < 0 {
		return fmt.Errorf("%w: negative delay %v", ErrInvalidOption, delay)
	}
	m := c.m
	if delay > 0 {
		m.Due = time.Now().Add(delay).UnixNano()
	} else {
		m.Due = 0
	}
	_, _, err := c.settle(ctx, false, append([]clientv3.Op{
		clientv3.OpDelete(c.q.claimKey(c.m.ID)),
		clientv3.OpDelete(c.pk),
	}, c.q.putItemOps(c.q.placeKey(m), encode(m, c.payload))...), nil)
	return err
}

// settle commits ops, and extra after them, while the claim is held, and
// keeps the head of the queue read after them for the next claim. It
// returns the transaction's answer and that head (both nil if the claim
// was settled before; the head nil if the read may have missed items).
func (c *Claim) settle(ctx context.Context, ack bool, ops, extra []clientv3.Op) (*clientv3.TxnResponse, *view, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil, nil, nil
	}
	// Read the head of the queue along with the write: the consumer's next
	// claim then needs no read of its own.
	c.held.Settling(true)
	rops, rr := c.q.readyOps(false)
	resp, err := c.held.Guard().Do(ctx, append(append(append(ops, extra...), rops...), c.q.delayedOp())...)
	if err != nil {
		c.held.Settling(false)
	}
	if errors.Is(err, concurrency.ErrNotHeld) {
		if cause := c.held.Err(); cause != nil {
			return nil, nil, fmt.Errorf("%w: item %s: %w", ErrClaimLost, c.m.ID, cause)
		}
		return nil, nil, fmt.Errorf("%w: item %s", ErrClaimLost, c.m.ID)
	}
	if err != nil {
		return nil, nil, err
	}
	c.done = true
	c.held.Drop()
	if ack {
		c.tel.Queue.Acked.Add(ctx, 1, telemetry.Named(c.name)...)
		c.tel.Queue.ClaimToAck.Record(ctx, time.Since(c.at).Seconds(), telemetry.NamedRec(c.name)...)
	} else {
		c.tel.Queue.Nacked.Add(ctx, 1, telemetry.Named(c.name)...)
	}
	v, complete := c.q.viewOf(resp, rr)
	if !complete {
		return resp, nil, nil
	}
	c.q.keepView(v)
	return resp, v, nil
}

// Release is Nack(ctx, 0), under the name every held resource shares
// (concurrency.Held): the item goes back to its place in line at once.
func (c *Claim) Release(ctx context.Context) error { return c.Nack(ctx, 0) }

var _ concurrency.Held = (*Claim)(nil)

func (q *Queue) tryClaim(ctx context.Context, s *concurrency.Session) (*Claim, error) {
	ctx, op := q.telFor(s).Begin(ctx, q.scopeFor(s), "concord.queue.TryClaim")
	c, _, err := q.claimReady(ctx, s)
	if err == nil && c == nil {
		err = ErrEmpty
	}
	var token int64
	if c != nil {
		token = int64(c.Token())
	}
	op.End(err, true, token)
	return c, err
}

// sweepInterval is how often a Queue value looks for items of dead
// consumers when it claims, unless another Queue value of the queue looked
// since its last look (a look reads every pending and claim key, and etcd
// visits with them every one deleted since its last compaction: the
// consumers of a queue share one look a second, not one each).
const sweepInterval = time.Second

// sweepDue reports whether this Queue value should look for orphans now,
// and if so counts the look as made; requeueOrphans(ctx, true) then skips
// the look if another Queue value made one since.
func (q *Queue) sweepDue() bool {
	now := time.Now().UnixNano()
	last := q.lastSweep.Load()
	return now-last >= int64(sweepInterval) && q.lastSweep.CompareAndSwap(last, now)
}

// claimReady reads the head of the queue and claims the first item it can.
// It returns items of dead consumers to the queue, promotes delayed items
// that are due, dead-letters items out of deliveries, and, when nothing is
// ready, returns when the next delayed item is due (zero if none).
// leave are ops committed with a successful claim (a blocked consumer leaves
// its line in the same write).
func (q *Queue) claimReady(ctx context.Context, s *concurrency.Session, leave ...clientv3.Op) (*Claim, time.Time, error) {
	if q.sweepDue() {
		// Items of dead consumers go back to their place first, so a
		// backlog does not hold them back until the queue drains.
		if _, err := q.requeueOrphans(ctx, true); err != nil {
			return nil, time.Time{}, err
		}
	}
	// The view an Ack or Nack of this Queue value read along with its
	// write saves a read; an empty one is read afresh.
	view := q.takeView()
	for {
		if view == nil || len(view.ready) == 0 {
			var err error
			if view, err = q.readHead(ctx); err != nil {
				return nil, time.Time{}, err
			}
		}
		promoted, next := q.promoteDue(ctx, view.delayed)
		cur := view
		view = nil
		if len(cur.ready) == 0 && !promoted {
			return nil, next, nil
		}
		// Take the first item; after losing a race for it, spread out over
		// the first few so racing consumers stop colliding. A failed claim
		// answers with a fresh view of the head, so a lost race costs no
		// extra read. Only an empty head means nothing is ready.
		for raced := q.contended.Load() > 0; len(cur.ready) > 0; {
			i := 0
			if raced {
				i = rand.IntN(samePriority(cur.ready))
			}
			c, fresh, err := q.claimOne(ctx, s, cur.ready[i], cur, leave...)
			if err != nil {
				return nil, time.Time{}, err
			}
			if c != nil {
				if !raced {
					q.contended.Store(0)
				} else if q.contended.Add(-1) < 0 {
					q.contended.Store(0)
				}
				return c, time.Time{}, nil
			}
			if !fresh.moved && !fresh.lowered && !fresh.newerAhead(cur.ready[i], cur.rev) {
				// Lost a race: spread the next claims of this Queue value
				// too, until a few succeed without racing.
				raced = true
				q.contended.Store(contendedClaims)
			}
			cur = fresh
		}
	}
}

// view is the head of the queue as read at revision rev, from front (see
// frontName). An empty ready is nothing ready only from readHead.
type view struct {
	ready, delayed []*mvccpb.KeyValue
	rev            int64
	front          string
	// moved: the claim that read it moved the item it tried to the dead
	// letters, which is no race lost to another consumer; lowered: it found
	// the front lowered below where it read from (ready is then empty), as
	// an item put ahead does.
	moved, lowered bool
}

// viewOf takes the view from a transaction whose last responses are
// readyOps' (made as rr says) and delayedOp's, and learns from it. A view
// read from a front lowered since has no ready items (complete false).
func (q *Queue) viewOf(resp *clientv3.TxnResponse, rr readyRead) (v *view, complete bool) {
	n := len(resp.Responses)
	ready, front, complete := q.readyOf(resp.Responses[n-3:n-1], rr)
	return &view{ready: ready, front: front, delayed: resp.Responses[n-1].GetResponseRange().Kvs, rev: resp.Header.Revision}, complete
}

// readHead reads the head of the queue: within the windows, and whole when
// the ready window is empty (the queue may be empty, or its head past the
// window), so an empty view means nothing is ready and its delayed items
// are the soonest due of all.
func (q *Queue) readHead(ctx context.Context) (*view, error) {
	for whole := false; ; {
		rops, rr := q.readyOps(whole)
		delayed := q.delayedOp()
		if whole {
			delayed = q.delayedOpWhole()
		}
		resp, err := q.client.Txn(ctx).Then(append(rops, delayed)...).Commit()
		if err != nil {
			return nil, err
		}
		v, complete := q.viewOf(resp, rr)
		switch {
		case !complete:
			// The front was lowered since: read again from it.
		case len(v.ready) > 0 || whole:
			return v, nil
		default:
			whole = true
		}
	}
}

// newerAhead reports whether v has an item ahead of kv that is newer than
// rev: a claim of kv failed because of it (not a lost race), and the new
// head goes first.
func (v *view) newerAhead(kv *mvccpb.KeyValue, rev int64) bool {
	for _, r := range v.ready {
		if bytes.Compare(r.Key, kv.Key) >= 0 {
			break
		}
		if r.ModRevision > rev {
			return true
		}
	}
	return false
}

// keepView keeps v for this Queue value's next claim.
func (q *Queue) keepView(v *view) {
	q.mu.Lock()
	q.view = v
	q.mu.Unlock()
}

// takeView returns the kept view, once.
func (q *Queue) takeView() *view {
	q.mu.Lock()
	defer q.mu.Unlock()
	v := q.view
	q.view = nil
	return v
}

// promoteDue moves due delayed items to ready. It reports whether it moved
// any, and when the first one left is due.
func (q *Queue) promoteDue(ctx context.Context, kvs []*mvccpb.KeyValue) (bool, time.Time) {
	now := time.Now().UnixNano()
	moved := false
	for _, kv := range kvs {
		m, payload, err := decode(kv.Value)
		if err != nil {
			q.log.Warn("concord queue: undecodable delayed item left in place", "queue", q.name, "key", string(kv.Key), "err", err)
			continue
		}
		if m.Due > now {
			return moved, time.Unix(0, m.Due)
		}
		m.Due = 0
		resp, err := q.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision)).
			Then(append([]clientv3.Op{clientv3.OpDelete(string(kv.Key))}, q.putItemOps(q.readyKey(m), encode(m, payload))...)...).
			Commit()
		switch {
		case err != nil:
			q.log.Debug("concord queue: promoting a due item failed; retried on the next look", "queue", q.name, "key", string(kv.Key), "err", err)
		case resp.Succeeded:
			moved = true
		}
	}
	return moved, time.Time{}
}

// undoClaim settles a claim transaction whose answer was lost: it may have
// landed, or may still land (requests on one connection can overtake each
// other in the server). It first rewrites the ready key unchanged, which
// bumps its mod revision: the claim, which requires the old one, can then
// never land. If the claim already had, it removes the claim and returns
// the item to its place. It tries for a short time of its own (ctx may be
// what failed); if etcd stays unreachable, the session goes on trying in
// the background until it succeeds or the session ends (the claim, if it
// lands, is under the session's lease).
func (q *Queue) undoClaim(ctx context.Context, s *concurrency.Session, ct *claimTxn) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if q.settleClaim(rctx, s, ct) == nil {
		return
	}
	(*session.Session)(s).Go(func(ctx context.Context) {
		if err := q.settleClaim(ctx, s, ct); err != nil && ctx.Err() == nil {
			q.log.Warn("concord queue: undo of a lost claim failed", "queue", q.name, "item", ct.m.ID, "err", err)
		}
	})
}

// settleClaim fences the claim ct (see undoClaim), retrying until ctx
// ends, and undoes it if it had landed: if the claim key holds its nonce,
// the value that claim wrote (another claim of the item by the same
// session, after it was returned, holds another).
func (q *Queue) settleClaim(ctx context.Context, s *concurrency.Session, ct *claimTxn) error {
	kv, id, nonce := ct.kv, ct.m.ID, ct.nonce
	key, ck := string(kv.Key), q.claimKey(id)
	fence := func() (*clientv3.TxnResponse, error) {
		actx, cancel := context.WithTimeout(ctx, undoTimeout) // a request lost with its connection is not waited on
		defer cancel()
		return q.client.Txn(actx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, string(kv.Value))).
			Else(clientv3.OpGet(ck)).
			Commit()
	}
	resp, err := backoff.RetryWithData(fence, backoff.WithContext(retry.Request.UpTo(500*time.Millisecond).New(), ctx))
	if err != nil {
		return err
	}
	if resp.Succeeded {
		return nil // fenced before it landed: nothing is claimed
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || clientv3.LeaseID(kvs[0].Lease) != s.Lease() || string(kvs[0].Value) != nonce {
		return nil // claimed by someone else, or already settled
	}
	(*session.Session)(s).RemoveOwn(ck)
	// An orphan left here (the claim's removal put off, or this requeue
	// failed) is returned to its place by a whole look, within about
	// slowLookInterval.
	rctx, cancel := context.WithTimeout(ctx, undoTimeout)
	defer cancel()
	if _, err := q.requeueOrphan(rctx, ct.pk, id); err != nil {
		q.log.Debug("concord queue: requeue after undo failed; a look returns it", "queue", q.name, "item", id, "err", err)
	}
	return nil
}

// undoTimeout bounds undoClaim's return of an item to the queue.
const undoTimeout = 2 * time.Second

// claimOne claims kv for s in one transaction: the ready key becomes a
// pending item plus a claim under s's lease. If another consumer got there
// first it returns the head of the queue as it is now instead.
//
// from is the view kv came from (its revision and front; its first ready
// item, if any, may raise the front): the claim also requires that no ready
// item ahead of kv is newer than from's revision, so an item enqueued ahead
// since (a higher priority) is not passed over.
func (q *Queue) claimOne(ctx context.Context, s *concurrency.Session, kv *mvccpb.KeyValue, from *view, leave ...clientv3.Op) (*Claim, *view, error) {
	key := string(kv.Key)
	// The mod revision, not just the create revision: undoClaim fences a
	// claim whose answer was lost by rewriting the key.
	unchanged := clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
	m, payload, err := decode(kv.Value)
	if err != nil || (q.maxDeliveries > 0 && m.Attempts >= q.maxDeliveries) {
		// Out of deliveries, or not an item at all: to the dead letters.
		dead := string(kv.Value)
		if err != nil {
			m.ID = path.Base(key)
		} else {
			dead = encode(m, payload)
		}
		rops, rr := q.readyOps(false)
		resp, err := q.client.Txn(ctx).If(unchanged).
			Then(append([]clientv3.Op{clientv3.OpDelete(key), clientv3.OpPut(q.deadKey(m.ID), dead)}, rops...)...).
			Else(rops...).Commit()
		if err != nil {
			return nil, nil, err
		}
		if resp.Succeeded {
			q.telFor(s).Queue.DeadLettered.Add(ctx, 1, telemetry.Named(q.scopeFor(s).Name)...)
		}
		n := len(resp.Responses)
		ready, front, complete := q.readyOf(resp.Responses[n-2:], rr)
		return nil, &view{ready: ready, front: front, rev: resp.Header.Revision, moved: resp.Succeeded, lowered: !complete}, nil
	}
	ct := q.claimTxnFor(s, kv, from, m, payload, leave...)
	rops, rr := q.readyOps(false)
	resp, err := q.client.Txn(ctx).If(ct.cmps...).Then(ct.then...).Else(rops...).Commit()
	if err != nil {
		// The claim may have landed with its answer lost: undo it, so a
		// failed Claim leaves no item claimed by a consumer that never got
		// it.
		q.undoClaim(ctx, s, ct)
		return nil, nil, err
	}
	if !resp.Succeeded {
		ready, front, complete := q.readyOf(resp.Responses, rr)
		return nil, &view{ready: ready, front: front, rev: resp.Header.Revision, lowered: !complete}, nil
	}
	c := q.newClaim(ctx, s, ct, resp.Header.Revision)
	c.next = q.candidate(from, kv)
	return c, nil, nil
}

// claimTxn is the claim of an item: the transaction's comparisons and
// writes, and what it claims.
type claimTxn struct {
	cmps    []clientv3.Cmp
	then    []clientv3.Op
	kv      *mvccpb.KeyValue
	m       meta // with this delivery counted
	payload []byte
	nonce   string // the claim key's value: this claim's, not another's of the session
	pk      string // where the item is kept while claimed
}

// claimTxnOf is the claim of kv from view from for s, or nil if kv is not
// an item that can be delivered (claimOne moves it to the dead letters).
func (q *Queue) claimTxnOf(s *concurrency.Session, kv *mvccpb.KeyValue, from *view) *claimTxn {
	m, payload, err := decode(kv.Value)
	if err != nil || (q.maxDeliveries > 0 && m.Attempts >= q.maxDeliveries) {
		return nil
	}
	return q.claimTxnFor(s, kv, from, m, payload)
}

// claimTxnFor is the claim of kv (holding m and payload) from view from
// for s, with leave among its writes: the ready key becomes a pending item
// plus a claim under s's lease, if kv is unchanged, unclaimed and no item
// ahead of it is newer than from (see claimOne).
func (q *Queue) claimTxnFor(s *concurrency.Session, kv *mvccpb.KeyValue, from *view, m meta, payload []byte, leave ...clientv3.Op) *claimTxn {
	key := string(kv.Key)
	m.Attempts++
	ck, lease := q.claimKey(m.ID), s.Lease()
	pk := q.ownedKey(lease, m.ID)
	nonce := newID()
	then := append([]clientv3.Op{
		clientv3.OpDelete(key),
		clientv3.OpPut(pk, encode(m, payload)),
		clientv3.OpPut(ck, nonce, clientv3.WithLease(lease)),
	}, leave...)
	if !q.marked(s) {
		// The session's first claim here marks it (see requeueOrphans).
		then = append(then, clientv3.OpPut(q.pfx+aliveDir+leaseName(lease), "", clientv3.WithLease(lease)),
			clientv3.OpPut(q.pfx+holderDir+leaseName(lease), ""))
	}
	if len(from.ready) > 0 {
		if raise := q.raiseOp(from.front, q.frontOf(string(from.ready[0].Key))); raise != nil {
			then = append(then, *raise)
		}
	}
	// The mod revision, not just the create revision: undoClaim fences a
	// claim whose answer was lost by rewriting the key.
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision),
		clientv3.Compare(clientv3.CreateRevision(ck), "=", 0)}, q.aheadSince(from.front, key, from.rev)...)
	return &claimTxn{cmps: cmps, then: then, kv: kv, m: m, payload: payload, nonce: nonce, pk: pk}
}

// marked reports whether a claim of s through q has landed, and so marked
// its session (see claimTxnFor).
func (q *Queue) marked(s *concurrency.Session) bool {
	done, ok := q.noted.Load(s.Lease())
	return ok && done.(<-chan struct{}) == s.Done()
}

// note records that a claim of s through q has landed. A new entry first
// drops those of sessions that have ended: a process that makes a session
// per job keeps none per past session.
func (q *Queue) note(s *concurrency.Session) {
	if q.marked(s) {
		return
	}
	q.noted.Range(func(lease, done any) bool {
		select {
		case <-done.(<-chan struct{}):
			q.noted.Delete(lease)
		default:
		}
		return true
	})
	q.noted.Store(s.Lease(), s.Done())
}

// newClaim is the Claim a landed claim transaction ct made at revision at.
func (q *Queue) newClaim(ctx context.Context, s *concurrency.Session, ct *claimTxn, at int64) *Claim {
	q.claimed()
	q.note(s)
	m := ct.m
	tel, sc := q.telFor(s), q.scopeFor(s)
	tel.Queue.Delivered.Add(ctx, 1, telemetry.Named(sc.Name)...)
	if m.Attempts > 1 {
		tel.Queue.Redelivered.Add(ctx, 1, telemetry.Named(sc.Name)...)
	}
	now := time.Now()
	tel.Queue.DeliveryDelay.Record(ctx, now.Sub(time.Unix(0, m.Enqueued)).Seconds(), telemetry.NamedRec(sc.Name)...)
	return &Claim{q: q, s: s, m: m, payload: ct.payload, tel: tel, name: sc.Name, at: now, pk: ct.pk,
		held: hold.New((*session.Session)(s), sc, q.claimKey(m.ID), ct.nonce, at, at)}
}

// nextCandidates is how many items AckNext tries to claim with its ack,
// each if the one before is taken: with 16 consumers the item chosen when
// the acked one was claimed is often taken by the ack.
const nextCandidates = 3

// claimChain nests the claims cts in one op, each in the else of the one
// before: the first that can land does.
func claimChain(cts []*claimTxn) clientv3.Op {
	var els []clientv3.Op
	if len(cts) > 1 {
		els = []clientv3.Op{claimChain(cts[1:])}
	}
	return clientv3.OpTxn(cts[0].cmps, cts[0].then, els)
}

// landed is the claim of cts that landed, from claimChain's answer r; nil
// if none did.
func landed(cts []*claimTxn, r *etcdserverpb.TxnResponse) *claimTxn {
	for _, ct := range cts {
		if r == nil {
			return nil
		}
		if r.Succeeded {
			return ct
		}
		if len(r.Responses) == 0 {
			return nil
		}
		r = r.Responses[0].GetResponseTxn()
	}
	return nil
}

// candidate is the items of v (other than taken) that AckNext would claim
// next, in the order it tries them, as claimReady would choose them (the
// first ones, or some of the first at random while claims are spreading
// out), as a view of those items alone, so a Claim keeps a few items'
// values, not the head's; nil if there is none.
func (q *Queue) candidate(v *view, taken *mvccpb.KeyValue) *view {
	var rest []*mvccpb.KeyValue
	for _, r := range v.ready {
		if taken == nil || !bytes.Equal(r.Key, taken.Key) {
			rest = append(rest, r)
		}
	}
	if len(rest) == 0 {
		return nil
	}
	n := min(nextCandidates, len(rest))
	if q.contended.Load() > 0 {
		// Distinct items at random among those of the first's priority.
		same := rest[:samePriority(rest)]
		n = min(n, len(same))
		pick := make([]*mvccpb.KeyValue, 0, n)
		for _, i := range rand.Perm(len(same))[:n] {
			pick = append(pick, same[i])
		}
		return &view{ready: pick, rev: v.rev, front: v.front}
	}
	return &view{ready: rest[:n:n], rev: v.rev, front: v.front}
}
