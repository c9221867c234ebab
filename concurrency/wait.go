package concurrency

import (
	"context"
	"fmt"
	"math"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxValueBytes is the largest value concord stores with a key: etcd's
// default request limit (1.5 MiB) less room for the key and the request.
const MaxValueBytes = 1536*1024 - 4096

// Ticket is a key in an ordered line: the one algorithm behind locks,
// semaphores, elections and queues. A ticket's key lives under its session's
// lease; its create revision orders it against every other key in the line
// and is its fencing token. A Ticket is not safe for concurrent use.
type Ticket struct {
	s     *Session
	key   string
	rev   int64
	value string
	gone  bool // deleted by the caller's own transaction; see Deleted

	// Read in the Txn that created the key, for the first check.
	lower int  // keys under the range with a lower create revision
	exact bool // lower is the exact count (else only 0 or "at least 1")
	// ahead bounds lower from above: keys ahead only ever leave (a new key
	// has a higher create revision), so a count once exact stays an upper
	// bound. When the one key ahead goes, the ticket is admitted without a
	// re-read (its own key's deletion is caught by Held's monitor, which
	// watches from readRev).
	ahead int
	pred  *mvccpb.KeyValue
	// Holders are the first n keys under the range, by create revision.
	// For n == 1 they are read only when at most one key is ahead (Head
	// reads the first key otherwise).
	Holders []*mvccpb.KeyValue
	readRev int64 // a revision at which the key was seen to exist
	prefix  string
}

// Join creates key (which must not exist) with value under the session's
// lease and, in the same Txn, reads the line under rangePrefix: how many keys
// are ahead of it, the one just ahead, and (for n > 1) the first n (the
// holders). rangePrefix is the part of the line that can keep this ticket
// waiting: the whole line for a lock, only the writers for a reader of an
// RWMutex.
func Join(ctx context.Context, s *Session, key, value, rangePrefix string, n int) (*Ticket, error) {
	if key == "" || rangePrefix == "" {
		return nil, ErrInvalidName
	}
	if n < 1 {
		return nil, ErrInvalidLimit
	}
	if len(value) > MaxValueBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrValueTooLarge, len(value), MaxValueBytes)
	}
	select {
	case <-s.Done():
		return nil, s.Err()
	default:
	}
	ops := []clientv3.Op{
		clientv3.OpPut(key, value, clientv3.WithLease(s.id)),
		// The newest keys (this one and the one just ahead); the
		// response's Count is the whole range's.
		clientv3.OpGet(rangePrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2)),
	}
	if n > 1 {
		ops = append(ops, clientv3.OpGet(rangePrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(int64(n))))
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(ops...).
		Commit()
	if err != nil {
		// The put may have landed with its answer lost, or may land yet:
		// remove it for good, so a failed or cancelled Join leaves no key
		// behind.
		s.removeStray(key)
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("concurrency: key %q already exists", key)
	}
	t := &Ticket{s: s, key: key, value: value, rev: resp.Header.Revision, readRev: resp.Header.Revision, prefix: rangePrefix}
	newest := resp.Responses[1].GetResponseRange()
	t.lower, t.exact = int(newest.Count), true
	var own *mvccpb.KeyValue
	for _, kv := range newest.Kvs {
		if kv.CreateRevision == t.rev {
			t.lower-- // our own key is in the range
			own = kv
			continue
		}
		if t.pred == nil {
			t.pred = kv
		}
	}
	t.ahead = t.lower
	switch {
	case n > 1:
		t.Holders = resp.Responses[2].GetResponseRange().Kvs
	case t.lower == 1:
		t.Holders = []*mvccpb.KeyValue{t.pred}
	case t.lower == 0 && own != nil:
		t.Holders = []*mvccpb.KeyValue{own}
	}
	return t, nil
}

// Head returns the first key under the range the ticket joined, as of Join
// if Join read it, else read now (nil if the range is empty).
func (t *Ticket) Head(ctx context.Context) (*mvccpb.KeyValue, error) {
	if len(t.Holders) > 0 {
		return t.Holders[0], nil
	}
	if t.lower == 0 {
		return nil, nil // nothing ahead, and the ticket is not in the range
	}
	resp, err := t.s.client.Get(ctx, t.prefix, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	return resp.Kvs[0], nil
}

// Key is the ticket's key.
func (t *Ticket) Key() string { return t.key }

// Token is the ticket's fencing token (its key's create revision).
func (t *Ticket) Token() Token { return t.rev }

// Value is the value stored with the key.
func (t *Ticket) Value() string { return t.value }

// Session is the session the ticket lives under.
func (t *Ticket) Session() *Session { return t.s }

// Admitted reports whether, as of the last read, fewer than n keys under the
// range were ahead of the ticket.
func (t *Ticket) Admitted(n int) bool { return t.lower == 0 || (t.exact && t.lower < n) }

// Guard returns the ticket's guard.
func (t *Ticket) Guard() Guard { return NewGuard(t.s.client, t.key, t.rev) }

// Wait blocks until fewer than n keys under rangePrefix have a lower create
// revision than the ticket's. For n == 1 it watches only the key just ahead;
// for larger n it watches the range's deletions and counts those ahead,
// making no request until the count drops below n. Watches are opened
// without a start revision (synced, served at once by the server) and the
// line is re-read once after each is created, unless (n == 1) the watch
// began at the revision of the last read, so it misses nothing. Wait returns
// ctx.Err() when ctx ends, the session's error when the session is lost, and
// ErrKeyDeleted when the ticket's own key is deleted; the key is left in
// place either way (Delete or Abandon it, or let the lease take it).
func (t *Ticket) Wait(ctx context.Context, rangePrefix string, n int) error {
	return t.WaitLimit(ctx, rangePrefix, func() (int, <-chan struct{}) { return n, nil })
}

// WaitLimit is Wait with a limit that may change while waiting (a
// semaphore's stored limit): limit returns the current limit and a channel
// closed when it next changes.
func (t *Ticket) WaitLimit(ctx context.Context, rangePrefix string, limit func() (int, <-chan struct{})) error {
	// A lost session ends the wait's requests and watches at once, even
	// ones blocked on a connection that no longer answers.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.s.ctx, cancel)()
	err := t.waitLimit(sctx, rangePrefix, limit)
	if err != nil && ctx.Err() == nil {
		if serr := t.s.Err(); serr != nil {
			return serr
		}
	}
	return err
}

func (t *Ticket) waitLimit(ctx context.Context, rangePrefix string, limit func() (int, <-chan struct{})) error {
	for {
		n, changed := limit()
		if n < 1 {
			return ErrInvalidLimit
		}
		if t.Admitted(n) {
			return nil
		}
		if !t.exact && !predMode(n) {
			// Only "someone is ahead" is known: count them.
			if err := t.recheck(ctx, rangePrefix, n); err != nil {
				return err
			}
			continue
		}
		if err := t.waitOnce(ctx, rangePrefix, n, changed); err != nil {
			return err
		}
	}
}

// predMode reports whether a wait for limit n watches only the key just
// ahead (n == 1: one watched key, no herd) rather than counting every
// deletion in the line.
func predMode(n int) bool { return n == 1 }

// waitOnce opens one watch and follows it until admitted, the watch fails
// (nil: the caller re-checks and opens another) or an error ends the wait.
func (t *Ticket) waitOnce(ctx context.Context, rangePrefix string, n int, changed <-chan struct{}) error {
	wctx, cancel := watchContext(ctx)
	defer cancel()
	c := t.s.client
	var wch clientv3.WatchChan
	if predMode(n) {
		wch = c.Watch(wctx, string(t.pred.Key), clientv3.WithCreatedNotify(), clientv3.WithFilterPut(), clientv3.WithPrevKV())
	} else {
		wch = c.Watch(wctx, rangePrefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify(), clientv3.WithFilterPut(), clientv3.WithPrevKV())
	}
	var watchedKey string
	var watchedRev int64
	if predMode(n) {
		watchedKey, watchedRev = string(t.pred.Key), t.pred.CreateRevision
	}
	created := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.s.Done():
			return t.s.Err()
		case <-changed:
			return nil // the limit changed: the caller re-evaluates
		case wr, ok := <-wch:
			if !ok || wr.Canceled || wr.Err() != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// Compaction, a lost leader or a broken stream: re-read and
				// watch again.
				return t.recheck(ctx, rangePrefix, n)
			}
			if wr.Created && !created {
				created = true
				if predMode(n) && wr.Header.Revision <= t.readRev {
					// Nothing changed since the last read: the watch
					// sees every later change, so no re-read is needed.
					continue
				}
				// The watch now sees every later change: read the line once.
				if err := t.recheck(ctx, rangePrefix, n); err != nil || t.Admitted(n) {
					return err
				}
				if predMode(n) && (string(t.pred.Key) != watchedKey || t.pred.CreateRevision != watchedRev) {
					return nil // the key ahead changed: watch the new one
				}
				continue
			}
			if !created {
				continue
			}
			if predMode(n) && !t.predGone(wr.Events, watchedRev) {
				// Not the key ahead leaving: a member that lags behind
				// the last read can replay the deletion of an earlier key
				// of the same name (names are reused).
				continue
			}
			if predMode(n) && t.ahead != math.MaxInt {
				// The key ahead is gone: one fewer ahead. If it was the
				// last, none can join ahead, so no re-read is needed.
				t.ahead--
				if t.ahead <= 0 {
					t.pred, t.lower, t.exact, t.ahead = nil, 0, true, 0
					return nil
				}
			}
			if !predMode(n) {
				// Every deletion in the line is seen after the last read,
				// so the count of keys ahead stays exact: admitted when it
				// drops below n, with no re-read.
				if t.countDeletes(wr.Events) {
					return nil // our own key went: the re-read reports why
				}
				if t.Admitted(n) {
					return nil
				}
				continue
			}
			if err := t.recheck(ctx, rangePrefix, n); err != nil || t.Admitted(n) {
				return err
			}
			return nil
		}
	}
}

// predGone reports whether evs hold the deletion of the watched key ahead:
// the incarnation created at rev, deleted after the last read (at which it
// existed). Anything else on that name is history a lagging member
// replays, or a later key of the same name.
func (t *Ticket) predGone(evs []*clientv3.Event, rev int64) bool {
	for _, ev := range evs {
		if ev.Type != mvccpb.DELETE || ev.Kv.ModRevision <= t.readRev {
			continue
		}
		if ev.PrevKv == nil || ev.PrevKv.CreateRevision == rev {
			return true
		}
	}
	return false
}

// countDeletes counts deletions of keys ahead of the ticket that happened
// after the last read (earlier ones are in its count). It reports true when
// the ticket's own key was deleted, or a deletion cannot be judged: the
// caller then re-reads.
func (t *Ticket) countDeletes(evs []*clientv3.Event) bool {
	for _, ev := range evs {
		if ev.Type != mvccpb.DELETE || ev.Kv.ModRevision <= t.readRev {
			continue
		}
		if ev.PrevKv == nil || ev.PrevKv.CreateRevision == t.rev {
			t.exact = false
			return true
		}
		if ev.PrevKv.CreateRevision < t.rev {
			t.lower--
			t.ahead = min(t.ahead, t.lower)
		}
	}
	return false
}

// recheck reads, in one round trip, whether the ticket's key still exists and
// which keys are ahead of it.
func (t *Ticket) recheck(ctx context.Context, rangePrefix string, n int) error {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxCreateRev(t.rev - 1)}
	if predMode(n) {
		opts = append(opts, clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	} else {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	resp, err := t.s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)).
		Then(clientv3.OpGet(rangePrefix, opts...)).
		Commit()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-t.s.Done():
			return t.s.Err()
		default:
		}
		return err
	}
	if !resp.Succeeded {
		return t.s.keyGone(ctx, t.key)
	}
	t.readRev = resp.Header.Revision
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if predMode(n) {
		t.pred = nil
		t.lower, t.exact = 0, false
		if len(kvs) > 0 {
			t.pred = kvs[0]
			t.lower = 1
		} else {
			t.ahead = 0
		}
		return nil
	}
	t.lower, t.exact = len(kvs), true
	t.ahead = min(t.ahead, t.lower)
	return nil
}

// DeleteOp deletes the ticket's key, for a caller that leaves the line in a
// transaction of its own (one write instead of two); once that transaction
// has succeeded, it calls Deleted.
func (t *Ticket) DeleteOp() clientv3.Op { return clientv3.OpDelete(t.key) }

// Deleted records that a transaction with DeleteOp succeeded: the key is
// gone, its name may be used again, and Abandon has nothing left to do.
func (t *Ticket) Deleted() {
	t.gone = true
	t.s.freeKey(t.key)
}

// Delete removes the ticket's key if it is still this ticket's (same create
// revision); a newer key of the same name is never touched. It is
// idempotent.
func (t *Ticket) Delete(ctx context.Context) error {
	resp, err := t.s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)).
		Then(clientv3.OpDelete(t.key)).
		Else(clientv3.OpGet(t.key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded || len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		t.s.freeKey(t.key) // gone: its name may be used again
	}
	return nil
}

// RemoveOwn deletes key if it is under the session's lease: for a write
// whose answer was lost (it may have landed) by a call that is failing. It
// uses a short timeout of its own (the caller's context may be what
// failed); if that fails, the session's cleaner keeps trying, and the lease
// removes the key in any case when the session ends.
func (s *Session) RemoveOwn(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", s.id)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		s.deleteLater(key, 0)
		return
	}
	if resp.Succeeded || len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		s.freeKey(key)
	}
}

// Abandon deletes the ticket's key with a short timeout of its own, for a
// caller whose context has ended. If etcd cannot be reached, the session
// keeps trying in the background (and the lease removes the key in any case
// when the session ends), so an abandoned wait never blocks the line for
// long.
func (t *Ticket) Abandon() {
	if t.gone {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	if err := t.Delete(ctx); err != nil {
		t.s.deleteLater(t.key, t.rev)
	}
}

// Rejoin finds the oldest key under rangePrefix held under the session's
// lease (a candidacy or wait that a restarted process resumes with
// WithLease) and returns it as a ticket, with the line read afresh. It
// returns ErrNoTicket when the lease holds no key there.
func Rejoin(ctx context.Context, s *Session, rangePrefix string) (*Ticket, error) {
	resp, err := s.client.Get(ctx, rangePrefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	for _, kv := range resp.Kvs {
		if clientv3.LeaseID(kv.Lease) != s.id {
			continue
		}
		t := &Ticket{s: s, key: string(kv.Key), rev: kv.CreateRevision, value: string(kv.Value), lower: 1, ahead: math.MaxInt}
		if err := t.recheck(ctx, rangePrefix, 1); err != nil {
			return nil, err
		}
		return t, nil
	}
	return nil, ErrNoTicket
}
