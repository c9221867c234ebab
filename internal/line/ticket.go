// Package line is ordered waiting, the one algorithm behind locks,
// semaphores, elections and queues: a key joins a line under a prefix in a
// Txn that also reads the line, then waits until fewer than n keys with a
// lower create revision remain (see Ticket.Wait).
package line

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/cenkalti/backoff/v4"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
)

// Ticket is a key in an ordered line. Its key lives under its session's
// lease; its create revision orders it against every other key in the line
// and is its fencing token. A Ticket is not safe for concurrent use.
type Ticket struct {
	s      *session.Session
	key    string
	rev    int64
	value  string
	prefix string // the part of the line that can keep the ticket waiting
	gone   bool   // deleted by the caller's own transaction; see Deleted

	// What the last read found. lower counts keys under prefix with a lower
	// create revision; exact says whether it is the exact count (else only
	// "0" or "at least 1"). ahead bounds lower from above: keys ahead only
	// ever leave (a new key has a higher create revision), so a count once
	// exact stays an upper bound, and when the one key ahead goes the
	// ticket is admitted without a re-read (its own key's deletion is
	// caught by its hold's monitor, which watches from readRev).
	lower   int
	exact   bool
	ahead   int
	pred    *mvccpb.KeyValue   // the key just ahead
	gate    *mvccpb.KeyValue   // n == 1: the key ahead of pred, when the last read saw one
	near    []*mvccpb.KeyValue // for n > 1, the n+1 keys just ahead, nearest first, read at nearRev
	nearRev int64
	holders []*mvccpb.KeyValue // n == 1: the head, when JoinHead read it (see Head)
	readRev int64              // a revision at which the key was seen to exist

	along        *clientv3.Op      // read with every re-read of the line; see ReadAlong
	alongResp    *pb.RangeResponse // along's answer at readRev
	readAdmitted bool              // the last Wait returned on a read's exact count; see ReadAdmitted
}

// ReadAlong makes every re-read of the line by the ticket's waits also read
// op (a Get) at the same revision. A waiter that confirms its admission
// with a read of its own (a semaphore's of its stored limit) then needs
// none after a wait that ended on such a read (ReadAdmitted); in a window
// (see waitWindow), the wait ends on one whenever it can.
func (t *Ticket) ReadAlong(op clientv3.Op) { t.along = &op }

// ReadAdmitted reports whether the last Wait returned because a re-read
// found fewer keys ahead than its limit, and if so their exact count and
// the answer to ReadAlong's op, both at that read's revision.
func (t *Ticket) ReadAdmitted() (ahead int, along *pb.RangeResponse, ok bool) {
	if !t.readAdmitted || t.alongResp == nil {
		return 0, nil, false
	}
	return t.lower, t.alongResp, true
}

// Join creates key (which must not exist) with value under the session's
// lease and, in the same Txn, reads the line under prefix: how many keys are
// ahead of it and the one just ahead (for n > 1, the n+1 just ahead: a
// window and its gate). prefix is the part of the line that can keep this ticket
// waiting: the whole line for a lock, only the writers for a reader of an
// RWMutex. A Join that fails leaves no key (see session.RemoveStray).
func Join(ctx context.Context, s *session.Session, key, value, prefix string, n int) (*Ticket, error) {
	return join(ctx, s, key, value, prefix, n, false)
}

// JoinHead is Join (n == 1) for a caller that will ask for the head when it
// is not admitted (a TryLock naming the holder): its read carries the keys'
// values and leases, so Head answers without another request.
func JoinHead(ctx context.Context, s *session.Session, key, value, prefix string) (*Ticket, error) {
	return join(ctx, s, key, value, prefix, 1, true)
}

func join(ctx context.Context, s *session.Session, key, value, prefix string, n int, values bool) (*Ticket, error) {
	if key == "" || prefix == "" {
		return nil, errs.InvalidName
	}
	if n < 1 {
		return nil, errs.InvalidLimit
	}
	if err := names.ValidateValue(value); err != nil {
		return nil, err
	}
	select {
	case <-s.Done():
		return nil, s.Err()
	default:
	}
	resp, retried, err := joinTxn(ctx, s, key, value, prefix, n, values)
	if err == nil && !resp.Succeeded && retried {
		// An attempt that timed out landed after all: take up its key.
		var t *Ticket
		if t, err = adopt(ctx, s, key, value, prefix, n, values); err == nil {
			return t, nil
		}
	}
	if err != nil {
		// The put may have landed with its answer lost, or may land yet:
		// remove it for good, so a failed or cancelled Join leaves no key.
		s.RemoveStray(key)
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("concurrency: key %q already exists", key)
	}
	t := &Ticket{s: s, key: key, value: value, rev: resp.Header.Revision, readRev: resp.Header.Revision, prefix: prefix}
	t.readJoin((*clientv3.GetResponse)(resp.Responses[1].GetResponseRange()), n, values)
	return t, nil
}

// adopt returns a ticket for key, created by an earlier attempt of this
// Join whose answer was lost (its lease and value are the session's and
// the Join's), or an error if the key is not that. It reads the line as
// the Join's Txn would have, at the key's create revision: the same count
// and nearest keys, as exact as a Join's. Only if that revision is
// compacted does it read afresh as Rejoin does, which leaves an n > 1
// ticket's count to a read of every key ahead (see waitLimit): thousands
// of those at once, after joins timed out under load, kept etcd's apply
// busy past its sessions' renew deadlines.
func adopt(ctx context.Context, s *session.Session, key, value, prefix string, n int, values bool) (*Ticket, error) {
	resp, err := s.Client().Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != s.Lease() || string(resp.Kvs[0].Value) != value {
		return nil, fmt.Errorf("concurrency: key %q already exists", key)
	}
	rev := resp.Kvs[0].CreateRevision
	t := &Ticket{s: s, key: key, rev: rev, value: value, prefix: prefix}
	line, err := s.Client().Get(ctx, prefix, append(joinReadOpts(n, values), clientv3.WithRev(rev))...)
	switch {
	case err == nil:
		t.readRev = rev
		t.readJoin(line, n, values)
		return t, nil
	case !errors.Is(err, rpctypes.ErrCompacted):
		return nil, err
	}
	t.lower, t.ahead = 1, math.MaxInt
	if err := t.recheckAhead(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// joinTxn commits the Join Txn, in turn with the client's other Joins
// (session.JoinTurn), again after a pause from retry.Overload
// (randomized: thousands joining at once spread out) while the server
// refuses it as overloaded or it times out, until ctx ends. An overloaded
// etcd ("too many requests": its apply lags its commits by more than 5,000
// entries) refuses before proposing, so nothing landed; a Txn that timed
// out ("request timed out": proposed, not applied within the request
// timeout) may land later, and the Txn's comparison lets only one attempt
// create the key: retried reports whether an attempt before the last
// timed out, so that a last one that found the key can take it up (adopt).
func joinTxn(ctx context.Context, s *session.Session, key, value, prefix string, n int, values bool) (resp *clientv3.TxnResponse, retried bool, err error) {
	var b *backoff.ExponentialBackOff
	for {
		done, err := s.JoinTurn(ctx)
		if err != nil {
			return nil, retried, err
		}
		resp, err := s.Client().Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(joinOps(s, key, value, prefix, n, values)...).
			Commit()
		done()
		timedOut := errors.Is(err, rpctypes.ErrTimeout)
		if !timedOut && !errors.Is(err, rpctypes.ErrTooManyRequests) {
			return resp, retried, err
		}
		retried = retried || timedOut
		if b == nil {
			b = retry.Overload.New()
		}
		if !retry.Sleep(ctx, b.NextBackOff()) {
			return nil, retried, ctx.Err()
		}
	}
}

// joinOps are the Join Txn's write and read: the put and the newest keys of
// the line (joinNewest; the response's Count is the whole line's). etcd
// sorts a range by create revision only by reading all of it, so this read
// costs the server in proportion to the line: it is the Join's only one.
// Unless values is set it reads keys only (see readAhead).
func joinOps(s *session.Session, key, value, prefix string, n int, values bool) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpPut(key, value, clientv3.WithLease(s.Lease())),
		clientv3.OpGet(prefix, joinReadOpts(n, values)...),
	}
}

// joinReadOpts are the options of the Join's read of the line.
func joinReadOpts(n int, values bool) []clientv3.OpOption {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(joinNewest(n))}
	if !values {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	return opts
}

// joinNewest is how many of the line's newest keys Join reads: its own and
// the n+1 just ahead (for n == 1 the key ahead and its gate, see
// waitAhead; for n > 1 a window and its gate, see waitWindow).
func joinNewest(n int) int64 {
	return int64(n) + 2
}

// readJoin records what the Join's read of the line found at the ticket's
// create revision; values says whether the read carried values, so the
// head it found can answer Head.
func (t *Ticket) readJoin(newest *clientv3.GetResponse, n int, values bool) {
	t.lower, t.exact = int(newest.Count), true
	var own *mvccpb.KeyValue
	for _, kv := range newest.Kvs {
		if kv.CreateRevision == t.rev {
			t.lower-- // our own key is in the range
			own = kv
			continue
		}
		switch {
		case t.pred == nil:
			t.pred = kv
		case n == 1 && t.gate == nil:
			t.gate = kv
		}
		if n > 1 {
			t.near, t.nearRev = append(t.near, kv), t.rev
		}
	}
	t.ahead = t.lower
	switch {
	case n > 1 || !values:
	case t.lower == 1:
		t.holders = []*mvccpb.KeyValue{t.pred}
	case t.lower == 0 && own != nil:
		t.holders = []*mvccpb.KeyValue{own}
	}
	// Otherwise Head reads the head.
}

// Rejoin finds the oldest key under prefix held under the session's lease (a
// candidacy or wait that a restarted process resumes with a resumed lease)
// and returns it as a ticket on that line, read afresh. It returns
// errs.NoTicket when the lease holds no key there.
func Rejoin(ctx context.Context, s *session.Session, prefix string) (*Ticket, error) {
	resp, err := s.Client().Get(ctx, prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	for _, kv := range resp.Kvs {
		if clientv3.LeaseID(kv.Lease) != s.Lease() {
			continue
		}
		t := &Ticket{s: s, key: string(kv.Key), rev: kv.CreateRevision, value: string(kv.Value),
			prefix: prefix, lower: 1, ahead: math.MaxInt}
		if err := t.recheckAhead(ctx); err != nil {
			return nil, err
		}
		return t, nil
	}
	return nil, errs.NoTicket
}

// Head returns the first key of the ticket's line, as of JoinHead if it
// read it, else read now (nil if the line is empty).
func (t *Ticket) Head(ctx context.Context) (*mvccpb.KeyValue, error) {
	if len(t.holders) > 0 {
		return t.holders[0], nil
	}
	if t.lower == 0 {
		return nil, nil // nothing ahead, and the ticket is not in the range
	}
	resp, err := t.s.Client().Get(ctx, t.prefix, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	return resp.Kvs[0], nil
}

// Key is the ticket's key.
func (t *Ticket) Key() string { return t.key }

// Token is the ticket's fencing token (its key's create revision).
func (t *Ticket) Token() concurrency.Token { return concurrency.Token(t.rev) }

// Value is the value stored with the key.
func (t *Ticket) Value() string { return t.value }

// Session is the session the ticket lives under.
func (t *Ticket) Session() *session.Session { return t.s }

// Admitted reports whether, as of the last read, fewer than n keys of the
// line were ahead of the ticket.
func (t *Ticket) Admitted(n int) bool { return t.lower == 0 || (t.exact && t.lower < n) }

// Guard returns the ticket's guard.
func (t *Ticket) Guard() concurrency.Guard {
	return concurrency.Guard(fence.New(t.s.Client(), t.key, t.rev))
}

// Hold returns the admitted ticket as a held resource of scope sc; the
// caller must release it.
func (t *Ticket) Hold(sc telemetry.Scope) *hold.Hold {
	return hold.New(t.s, sc, t.key, t.value, t.rev, t.readRev)
}

// Ahead is how many keys of the line were ahead of the ticket at its last
// read (for an n > 1 line read inexactly, at least this many).
func (t *Ticket) Ahead() int { return t.lower }

// DeleteOp deletes the ticket's key, for a caller that leaves the line in a
// transaction of its own (one write instead of two); once that transaction
// has succeeded, it calls Deleted.
func (t *Ticket) DeleteOp() clientv3.Op { return clientv3.OpDelete(t.key) }

// Deleted records that a transaction with DeleteOp succeeded: the key is
// gone, its name may be used again, and Abandon has nothing left to do.
func (t *Ticket) Deleted() {
	t.gone = true
	t.s.FreeKey(t.key)
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
	ctx, cancel := context.WithTimeout(context.Background(), session.RequestTimeout)
	defer cancel()
	if err := hold.DeleteOwn(ctx, t.s, t.key, t.rev); err != nil {
		t.s.DeleteLater(t.key, t.rev)
	}
}

// Delete removes the ticket's key if it is still this ticket's (same create
// revision); a newer key of the same name is never touched. It is
// idempotent.
func (t *Ticket) Delete(ctx context.Context) error {
	return hold.DeleteOwn(ctx, t.s, t.key, t.rev)
}
