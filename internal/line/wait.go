package line

import (
	"context"
	"errors"
	"math"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/watch"
)

// Wait blocks until fewer than n keys of the ticket's line have a lower
// create revision than the ticket's. For n == 1 it watches only the key just
// ahead (waitAhead); for larger n it watches the line's deletions and counts
// those ahead, making no request until the count drops below n (waitCount),
// or, far back in a long line, watches only the n+1 keys just ahead
// (waitWindow). The first two open their watch without a start revision
// (synced, served at once by the server; one with a start revision behind
// the server's waits for etcd's catch-up of slow watchers, up to 100 ms)
// and re-read the line once after it is created, unless the watch began
// at the revision of the last read, so it misses nothing; a window's
// watches start after the read that found their keys.
// Wait returns ctx.Err() when ctx ends, the session's error when the session
// is lost, and errs.KeyDeleted when the ticket's own key is deleted; the key
// is left in place either way (Abandon it, or let the lease take it).
func (t *Ticket) Wait(ctx context.Context, n int) error {
	return t.WaitLimit(ctx, func() (int, <-chan struct{}) { return n, nil })
}

// WaitLimit is Wait with a limit that may change while waiting (a
// semaphore's stored limit): limit returns the current limit and a channel
// closed when it next changes.
func (t *Ticket) WaitLimit(ctx context.Context, limit func() (int, <-chan struct{})) error {
	// A lost session ends the wait's requests and watches at once, even
	// ones blocked on a connection that no longer answers.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.s.Ctx(), cancel)()
	err := t.waitLimit(sctx, limit)
	if err != nil && ctx.Err() == nil {
		if serr := t.s.Err(); serr != nil {
			return serr
		}
	}
	return err
}

func (t *Ticket) waitLimit(ctx context.Context, limit func() (int, <-chan struct{})) error {
	t.readAdmitted = false
	for {
		n, changed := limit()
		if n < 1 {
			return errs.InvalidLimit
		}
		if t.Admitted(n) {
			return nil
		}
		t.readAdmitted = false // set again only by the read a wait ends on
		var err error
		switch {
		case n == 1:
			err = t.waitAhead(ctx, changed)
		case !t.exact:
			// Only "someone is ahead" is known: count them.
			err = t.recheckCount(ctx)
		case t.lower >= windowFrom*n:
			err = t.waitWindow(ctx, n, changed)
		default:
			err = t.waitCount(ctx, n, changed)
		}
		if err != nil {
			return err
		}
	}
}

// waitAhead watches the key just ahead until the ticket is admitted, the key
// ahead changes, the watch fails or the limit changes (nil: the caller
// re-evaluates), or an error ends the wait. The watch is the session's
// (WatchKey): one kept from the last wait on the same key is taken up, and
// this one is kept for the next, unless it failed.
//
// With more than one key ahead it also watches the gate, the key ahead of
// that one, from the last read: when the gate goes it re-reads, while the
// key ahead still holds or waits, and a read that finds the key ahead alone
// makes the count exact (1), so that key's deletion admits the ticket
// without a read between a release and the grant. Without the gate that
// read came after the key ahead had gone, on the handoff's path.
func (t *Ticket) waitAhead(ctx context.Context, changed <-chan struct{}) error {
	pred := t.pred
	kw := t.s.WatchKey(string(pred.Key), false, t.readRev)
	keep := true
	defer func() { t.s.KeepWatch(kw, keep) }()
	var gw *session.KeyWatch
	var gateCh clientv3.WatchChan
	gate := t.gate
	if gate != nil && t.ahead > 1 {
		gw = t.s.WatchKeyAfter(string(gate.Key), t.readRev)
		gateCh = gw.Ch
		keepGate := true
		defer func() { t.s.KeepWatch(gw, keepGate && t.s.Err() == nil) }()
		defer func() { keepGate = gateCh != nil }()
	}
	for {
		wr, fromGate, broken, err := t.next2(ctx, kw.Ch, gateCh, changed, t.recheckAhead)
		switch {
		case wr != nil && fromGate:
			gw.Saw(wr)
		case wr != nil:
			kw.Saw(wr)
		}
		switch {
		case fromGate && broken:
			gateCh = nil // not kept
			return err
		case fromGate && wr != nil:
			if wr.Created {
				// Marked, so that a wait taking this watch up as its key
				// ahead's does not wait for a created response again.
				gw.Created = true
				continue
			}
			if !t.predGone(wr.Events, gate.CreateRevision) {
				continue
			}
			// The gate went: read while the key ahead still holds.
			return t.recheckAhead(ctx)
		case err != nil || wr == nil:
			keep = !broken && t.s.Err() == nil
			return err
		case wr.Created && !kw.Created:
			kw.Created, kw.From = true, wr.Header.Revision
			if wr.Header.Revision <= t.readRev {
				// Nothing changed since the last read: the watch sees
				// every later change, so no re-read is needed.
				continue
			}
			if err := t.recheckAhead(ctx); err != nil || t.Admitted(1) {
				return err
			}
			if string(t.pred.Key) != string(pred.Key) || t.pred.CreateRevision != pred.CreateRevision {
				return nil // the key ahead changed: watch the new one
			}
		case !kw.Created || !t.predGone(wr.Events, pred.CreateRevision):
			// Not the key ahead leaving: a deletion the last read already
			// saw (a kept watch holds those of earlier incarnations, and a
			// member that lags behind the last read can replay them).
		case t.ahead != math.MaxInt && t.ahead <= 1:
			// The last key ahead is gone: none can join ahead, so no
			// re-read is needed.
			t.pred, t.gate, t.lower, t.exact, t.ahead = nil, nil, 0, true, 0
			return nil
		default:
			if t.ahead != math.MaxInt {
				t.ahead--
			}
			return t.recheckAhead(ctx)
		}
	}
}

// waitCount watches the line's deletions until fewer than n keys are ahead,
// the watch fails or the limit changes (nil: the caller re-evaluates), or an
// error ends the wait. Every deletion after the last read is seen, so the
// count stays exact without a re-read. Its watch is its own (a kept watch on
// the whole line would hear every deletion in it while its session holds or
// does other work).
func (t *Ticket) waitCount(ctx context.Context, n int, changed <-chan struct{}) error {
	wctx, cancel := watch.Context(ctx)
	defer cancel()
	wch := t.s.Client().Watch(wctx, t.prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify(), clientv3.WithFilterPut(), clientv3.WithPrevKV())
	for created := false; ; {
		wr, _, err := t.next(ctx, wch, changed, t.recheckCount)
		switch {
		case err != nil || wr == nil:
			return err
		case wr.Created && !created:
			created = true
			if wr.Header.Revision <= t.readRev {
				// Nothing changed since the last read: the watch sees
				// every later change, so the count stays exact.
				continue
			}
			// The watch now sees every later change: read the line once.
			if err := t.recheckCount(ctx); err != nil || t.Admitted(n) {
				return err
			}
		case !created:
		case t.countDeletes(wr.Events):
			return nil // our own key went: the re-read reports why
		case t.Admitted(n):
			return nil
		}
	}
}

// windowFrom sets where an n > 1 ticket stops watching the whole line: with
// at least windowFrom*n keys ahead at its last read it watches only the
// n+1 just ahead (waitWindow). A whole-line watch costs the server an event
// per waiter for every deletion, so its cost per grant grows with the line;
// a window costs each waiter about 3(n+1) watch messages (create, created,
// cancel) and a read or two, whatever the line's length. Measured on
// BenchmarkAcquireRelease, the two cost the server about the same near a
// line of 6n.
const windowFrom = 6

// waitWindow watches the n keys just ahead of the ticket (its window) and
// the one ahead of those (its gate), each on a watch of its own from the
// last read, until the ticket is admitted, the limit changes or a watch
// fails (nil: the caller re-evaluates), or an error ends the wait.
//
// While the window's n keys exist, at least n keys are ahead, so no
// deletion elsewhere can admit the ticket, and only the waiters within n+1
// of a deleted key hear of it (no herd). A deleted gate means the keys
// ahead of the window are thinning: a read finds the next gate, or none,
// and then the count is exact (n), so the next deletion in the window admits
// the ticket without a read. A deletion in the window while a gate exists
// lowers the count, an upper bound (keys beyond the gate leave unseen); a
// read then admits the ticket or moves the window. Reads are made when the
// gate goes, before the ticket is next in line, not between a release and
// the grant it allows.
//
// With ReadAlong, whose caller confirms an admission with a read anyway,
// a deleted gate makes no read (the window's keys still hold: at least n
// ahead), and a deletion in the window always does: that read admits the
// ticket (ReadAdmitted) or moves the window, so the admission costs one
// read, not the gate's and the caller's.
func (t *Ticket) waitWindow(ctx context.Context, n int, changed <-chan struct{}) error {
	if len(t.near) != n+1 || t.nearRev != t.readRev {
		// Not a window and gate for this n read at the last read.
		if err := t.readNear(ctx, n); err != nil || t.Admitted(n) {
			t.readAdmitted = err == nil
			return err
		}
	}
	w := newWindow(ctx, t.s, changed)
	defer w.close()
	w.sync(t.near, t.readRev)
	for {
		kv, wr, err := w.next()
		switch {
		case errors.Is(err, errLimitChanged):
			return nil
		case errors.Is(err, errSessionDone):
			return t.s.Err()
		case err != nil:
			return err
		case wr.Canceled || wr.Err() != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return t.readNear(ctx, n) // a broken watch: start again from a read
		case !deletedAfter(wr.Events, t.readRev):
			continue
		}
		switch {
		case len(t.near) <= n || !sameKV(kv, t.near[n]):
			// A key of the window: one fewer ahead.
			t.lower--
			t.ahead = min(t.ahead, t.lower)
			if t.Admitted(n) && t.along == nil {
				return nil
			}
		case t.along != nil:
			continue // the gate: see above
		}
		if err := t.readNear(ctx, n); err != nil || t.Admitted(n) {
			t.readAdmitted = err == nil
			return err
		}
		w.sync(t.near, t.readRev)
	}
}

// deletedAfter reports whether evs hold a deletion after revision rev. A
// window key's watch starts after the read that found it, so its first such
// deletion is of the key the read found.
func deletedAfter(evs []*clientv3.Event, rev int64) bool {
	for _, ev := range evs {
		if ev.Type == mvccpb.DELETE && ev.Kv.ModRevision > rev {
			return true
		}
	}
	return false
}

// readNear reads, in one round trip, whether the ticket's key still exists
// and which n+1 keys are just ahead of it. Fewer is an exact count; n+1
// leaves the count where it was, an upper bound (etcd's range Count ignores
// the create-revision filter, so it cannot say how many).
func (t *Ticket) readNear(ctx context.Context, n int) error {
	kvs, err := t.readAhead(ctx, clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(int64(n)+1))
	if err != nil {
		return err
	}
	t.near, t.nearRev = kvs, t.readRev
	if len(kvs) <= n {
		t.lower = len(kvs)
	} else {
		t.lower = max(t.lower, n+1)
	}
	t.exact = true
	t.ahead = min(t.ahead, t.lower)
	if len(kvs) > 0 {
		t.pred = kvs[0]
	}
	return nil
}

// next returns the watch's next response, nil (and a nil error) when the
// limit changed, or, when the watch broke (compaction, a lost leader, a
// broken stream: broken is true), the result of re-reading the line: the
// caller then re-evaluates with a new watch.
func (t *Ticket) next(ctx context.Context, wch clientv3.WatchChan, changed <-chan struct{}, recheck func(context.Context) error) (wr *clientv3.WatchResponse, broken bool, err error) {
	wr, _, broken, err = t.next2(ctx, wch, nil, changed, recheck)
	return wr, broken, err
}

// next2 is next over two watches (a nil second one never answers);
// fromSecond says which one answered.
func (t *Ticket) next2(ctx context.Context, wch, second clientv3.WatchChan, changed <-chan struct{}, recheck func(context.Context) error) (wr *clientv3.WatchResponse, fromSecond, broken bool, err error) {
	var r clientv3.WatchResponse
	var ok bool
	select {
	case <-ctx.Done():
		return nil, false, false, ctx.Err()
	case <-t.s.Done():
		return nil, false, false, t.s.Err()
	case <-changed:
		return nil, false, false, nil
	case r, ok = <-wch:
	case r, ok = <-second:
		fromSecond = true
	}
	if ok && !r.Canceled && r.Err() == nil {
		return &r, fromSecond, false, nil
	}
	if ctx.Err() != nil {
		return nil, fromSecond, true, ctx.Err()
	}
	return nil, fromSecond, true, recheck(ctx)
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

// recheckAhead reads, in one round trip, whether the ticket's key still
// exists and which two keys are just ahead of it: the key ahead and its
// gate. Finding one, the count is exact.
func (t *Ticket) recheckAhead(ctx context.Context) error {
	kvs, err := t.readAhead(ctx, clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2))
	if err != nil {
		return err
	}
	t.pred, t.gate = nil, nil
	t.lower, t.exact = 0, false
	switch len(kvs) {
	case 0:
		t.ahead, t.exact = 0, true
	case 1:
		t.pred, t.lower, t.exact, t.ahead = kvs[0], 1, true, 1
	default:
		t.pred, t.gate, t.lower = kvs[0], kvs[1], 1
	}
	return nil
}

// recheckCount reads, in one round trip, whether the ticket's key still
// exists and how many keys are ahead of it.
func (t *Ticket) recheckCount(ctx context.Context) error {
	kvs, err := t.readAhead(ctx, clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	t.lower, t.exact = len(kvs), true
	t.ahead = min(t.ahead, t.lower)
	return nil
}

// readAhead reads the keys ahead of the ticket (with opts) if its own key
// still exists, and records the read's revision. The line's reads ask for
// keys only: etcd 3.7 answers those from its in-memory index without
// reading each key from its database (a sorted read of a 10,000-key line
// costs its server about a third of the CPU), and older servers answer
// them as before; the line needs only each key's name and create revision.
func (t *Ticket) readAhead(ctx context.Context, opts ...clientv3.OpOption) ([]*mvccpb.KeyValue, error) {
	opts = append(opts, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(t.rev-1))
	ops := []clientv3.Op{clientv3.OpGet(t.prefix, opts...)}
	if t.along != nil {
		ops = append(ops, *t.along)
	}
	resp, err := t.s.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)).
		Then(ops...).
		Commit()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		select {
		case <-t.s.Done():
			return nil, t.s.Err()
		default:
		}
		return nil, err
	}
	if !resp.Succeeded {
		return nil, t.s.KeyGone(ctx, t.key)
	}
	t.readRev = resp.Header.Revision
	if t.along != nil {
		t.alongResp = resp.Responses[1].GetResponseRange()
	}
	return resp.Responses[0].GetResponseRange().Kvs, nil
}
