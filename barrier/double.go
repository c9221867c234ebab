package barrier

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
	"github.com/concordkit/concord/internal/watch"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A participant's key holds its state and value: entered, or left (it has
// called Leave and waits for the others).
const (
	enteredMark = "e:"
	leftMark    = "l:"
)

// releaseTimeout bounds the removal of a participant's key when the call
// that would have kept it failed.
const releaseTimeout = 5 * time.Second

// DoubleBarrier lets n participants start and finish a phase together:
// Enter blocks until n participants have entered, Leave blocks until every
// participant that entered has left. Each participant is one DoubleBarrier
// value on its own session; its key lives under the session's lease, so a
// participant whose session is lost counts as left (the others are not
// stuck) and the others are told: their Leave returns a *LostError naming
// it. A DoubleBarrier is safe for concurrent use, though one value is one
// participant: Enter and Leave alternate.
type DoubleBarrier struct {
	s        *session.Session
	n        int
	value    string
	prefix   string // participants and the ready key
	parts    string // participants
	readyKey string
	scope    telemetry.Scope

	mu    sync.Mutex
	held  *hold.Hold
	view  *roundView // as of the end of Enter
	busy  bool
	close bool
}

// NewDouble returns participant of the double barrier name for n
// participants, on session s. It checks its input and makes no request.
func NewDouble(s *concurrency.Session, name string, n int, opts ...Option) (*DoubleBarrier, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("%w: got %d", ErrInvalidCount, n)
	}
	c := newConfig(opts)
	if err := names.ValidateValue(leftMark + c.value); err != nil {
		return nil, err
	}
	p := name + "/.dbarrier/"
	cs := (*session.Session)(s)
	return &DoubleBarrier{s: cs, n: n, value: c.value, prefix: p, parts: p + "p/", readyKey: p + "ready",
		scope: cs.Scope(telemetry.Barrier, name)}, nil
}

// begin marks a call in progress; it fails if one is, or if entered is
// not what the call needs.
func (d *DoubleBarrier) begin(entered bool) (*hold.Hold, *roundView, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.close:
		return nil, nil, ErrClosed
	case d.busy:
		return nil, nil, ErrInProgress
	case entered && d.held == nil:
		return nil, nil, ErrNotEntered
	case !entered && d.held != nil:
		return nil, nil, ErrAlreadyEntered
	}
	d.busy = true
	return d.held, d.view, nil
}

func (d *DoubleBarrier) end(h *hold.Hold, v *roundView) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.busy, d.held, d.view = false, h, v
}

// Enter joins the barrier and blocks until n participants have entered (it
// may be the n-th), or the barrier's current round already has: a
// participant arriving while others are still between Enter and Leave joins
// their round and returns at once. Enter returns ctx.Err() when ctx ends and
// the session's error when the session is lost; a failed Enter leaves no
// key behind.
func (d *DoubleBarrier) Enter(ctx context.Context) error {
	if _, _, err := d.begin(false); err != nil {
		return err
	}
	h, v, err := d.enter(ctx)
	d.end(h, v)
	return err
}

func (d *DoubleBarrier) enter(parent context.Context) (*hold.Hold, *roundView, error) {
	ctx, cancel := d.sessionContext(parent)
	defer cancel()
	t, err := line.Join(ctx, d.s, d.s.LineKey(d.parts), enteredMark+d.value, d.parts, 1)
	if err != nil {
		return nil, nil, d.failure(parent, err)
	}
	h := t.Hold(d.scope)
	v := &roundView{d: d, held: h, own: t.Key(), ownRev: int64(t.Token())}
	read := func(ctx context.Context) (int64, bool, error) {
		rev, err := v.read(ctx)
		if err != nil || rev == 0 {
			return rev, false, err
		}
		done, err := v.entered(ctx)
		return rev, done, err
	}
	handle := func(evs []*clientv3.Event) (bool, error) {
		if err := v.apply(evs); err != nil {
			return false, err
		}
		return v.entered(ctx)
	}
	if err := watch.Until(ctx, d.s.Client(), d.prefix, watchOpts, 0, false, read, handle); err != nil {
		d.drop(h)
		return nil, nil, d.failure(parent, err)
	}
	// Participants lost before the round was ready never passed it.
	v.lost, v.lostSeen = nil, nil
	return h, v, nil
}

var watchOpts = []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}

// Leave marks this participant as left and blocks until every participant
// of its round has left or been lost, then removes its key. If some were
// lost instead of leaving (their sessions were lost, or their keys deleted,
// after this participant entered), Leave still completes and returns a
// *LostError (matching ErrParticipantLost) naming them. Leave returns
// ctx.Err() when ctx ends and the session's error when the session is lost;
// the participant has then not left cleanly: its key goes (with the lease,
// or removed now) and the others count it as lost.
func (d *DoubleBarrier) Leave(ctx context.Context) error {
	h, v, err := d.begin(true)
	if err != nil {
		return err
	}
	err = d.leave(ctx, h, v)
	d.drop(h)
	d.end(nil, nil)
	return err
}

func (d *DoubleBarrier) leave(parent context.Context, h *hold.Hold, v *roundView) error {
	ctx, cancel := d.sessionContext(parent)
	defer cancel()
	c := d.s.Client()
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(v.own), "=", v.ownRev)).
		Then(clientv3.OpPut(v.own, leftMark+d.value, clientv3.WithLease(d.s.Lease()))).
		Commit()
	if err != nil {
		return d.failure(parent, err)
	}
	if !resp.Succeeded {
		return d.failure(parent, ErrKeyDeleted)
	}
	read := func(ctx context.Context) (int64, bool, error) {
		rev, err := v.read(ctx)
		if err != nil || rev == 0 {
			return rev, false, err
		}
		done, err := v.left(ctx)
		return rev, done, err
	}
	handle := func(evs []*clientv3.Event) (bool, error) {
		if err := v.apply(evs); err != nil {
			return false, err
		}
		return v.left(ctx)
	}
	// Resume from the end of Enter: every departure since, and whether it
	// was a leave or a loss, is in the history.
	if err := watch.Until(ctx, c, d.prefix, watchOpts, v.rev, true, read, handle); err != nil {
		return d.failure(parent, err)
	}
	if len(v.lost) > 0 {
		return &LostError{Values: v.lost}
	}
	return nil
}

// Close gives up: a participant that has entered and not left removes its
// key (the others count it as lost). Enter and Leave fail with ErrClosed
// from then on. Close is safe to call more than once.
func (d *DoubleBarrier) Close(ctx context.Context) error {
	d.mu.Lock()
	d.close = true
	h := d.held
	d.held, d.view = nil, nil
	d.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.Release(ctx)
}

// sessionContext returns ctx, cancelled too when the session ends.
func (d *DoubleBarrier) sessionContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-d.s.Done():
			cancel()
		case <-stop:
		}
	})
	return ctx, func() { close(stop); wg.Wait(); cancel() }
}

// failure turns an error of a call made with sessionContext into what the
// caller returns: the caller's ctx.Err(), or the session's error when the
// session ended first.
func (d *DoubleBarrier) failure(parent context.Context, err error) error {
	if parent.Err() != nil {
		return parent.Err()
	}
	if serr := d.s.Err(); serr != nil {
		return serr
	}
	return err
}

// drop removes the participant's key, waiting at most releaseTimeout; if
// that fails the session keeps trying and the lease removes it in any case.
func (d *DoubleBarrier) drop(h *hold.Hold) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	_ = h.Release(ctx)
}

// roundView is a participant's view of the barrier's keys, as of rev.
type roundView struct {
	d      *DoubleBarrier
	held   *hold.Hold
	own    string
	ownRev int64

	rev      int64
	parts    map[string]*mvccpb.KeyValue
	ready    int64 // create revision of the ready key, 0 if none
	lost     []string
	lostSeen map[string]bool
}

// read replaces the view with the keys as they are now. It returns 0 (and
// no error) when etcd could not be read.
func (v *roundView) read(ctx context.Context) (int64, error) {
	resp, err := v.d.s.Client().Get(ctx, v.d.prefix, clientv3.WithPrefix())
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, nil
	}
	v.parts, v.ready = map[string]*mvccpb.KeyValue{}, 0
	for _, kv := range resp.Kvs {
		v.put(kv)
	}
	v.rev = resp.Header.Revision
	if _, ok := v.parts[v.own]; !ok {
		return 0, v.ownGone()
	}
	return v.rev, nil
}

func (v *roundView) put(kv *mvccpb.KeyValue) {
	k := string(kv.Key)
	switch {
	case k == v.d.readyKey:
		v.ready = kv.CreateRevision
	case strings.HasPrefix(k, v.d.parts):
		v.parts[k] = kv
	}
}

// apply brings the view up to date with evs. A participant deleted while
// it had entered and not left was lost: it is recorded.
func (v *roundView) apply(evs []*clientv3.Event) error {
	if v.parts == nil {
		v.parts = map[string]*mvccpb.KeyValue{}
	}
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		v.rev = max(v.rev, ev.Kv.ModRevision)
		if ev.Type == clientv3.EventTypePut {
			v.put(ev.Kv)
			continue
		}
		if k == v.d.readyKey {
			v.ready = 0
			continue
		}
		prev, known := v.parts[k]
		delete(v.parts, k)
		if k == v.own {
			return v.ownGone()
		}
		if ev.PrevKv != nil {
			prev = ev.PrevKv
		}
		if known || ev.PrevKv != nil {
			if val, ok := strings.CutPrefix(string(prev.Value), enteredMark); ok && !v.lostSeen[k] {
				if v.lostSeen == nil {
					v.lostSeen = map[string]bool{}
				}
				v.lostSeen[k] = true
				v.lost = append(v.lost, val)
			}
		}
	}
	return nil
}

// ownGone is the error for this participant's own key found missing: the
// session's error if its lease is gone (the hold finds out which), else
// ErrKeyDeleted.
func (v *roundView) ownGone() error {
	t := time.NewTimer(releaseTimeout)
	defer t.Stop()
	select {
	case <-v.held.Done():
		if err := v.held.Err(); err != concurrency.ErrReleased {
			return err
		}
	case <-v.d.s.Done():
		return v.d.s.Err()
	case <-t.C:
	}
	return fmt.Errorf("%w: %s", ErrKeyDeleted, v.own)
}

// working counts the other participants that have entered and not left.
func (v *roundView) working() (n int) {
	for k, kv := range v.parts {
		if k != v.own && strings.HasPrefix(string(kv.Value), enteredMark) {
			n++
		}
	}
	return n
}

// entered reports whether this participant may pass Enter: a round is in
// progress (the ready key exists and another participant is still working
// in it, or it was made after this participant entered), or n participants
// have entered, in which case it marks the round
// ready. A ready key with nobody working is a finished (or crashed)
// round's: it is removed first.
func (v *roundView) entered(ctx context.Context) (bool, error) {
	if v.ready != 0 && (v.working() > 0 || v.ownRev < v.ready) {
		// A round in progress, or the one this participant was counted
		// in (its watch may have missed the mark being made).
		return true, nil
	}
	c := v.d.s.Client()
	if v.ready != 0 {
		// Nobody works in that round: remove its ready key, unless a
		// participant changed meanwhile (then the next event decides).
		_, err := c.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(v.d.readyKey), "=", v.ready),
			clientv3.Compare(clientv3.ModRevision(v.d.parts), "<", v.rev+1).WithPrefix(),
		).Then(clientv3.OpDelete(v.d.readyKey)).Commit()
		return false, err
	}
	counted := v.counted()
	if len(counted) < v.d.n {
		return false, nil
	}
	// n have entered: the round is ready. Whoever sees it first marks it,
	// only while the n participants it counted are still as it saw them.
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(v.d.readyKey), "=", 0)}
	for _, kv := range counted {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
	}
	resp, err := c.Txn(ctx).If(cmps...).Then(clientv3.OpPut(v.d.readyKey, "")).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// counted returns n participants that have entered and not left, this one
// first, or fewer if fewer have.
func (v *roundView) counted() []*mvccpb.KeyValue {
	own := v.parts[v.own]
	if own == nil || !strings.HasPrefix(string(own.Value), enteredMark) {
		return nil
	}
	out := []*mvccpb.KeyValue{own}
	for k, kv := range v.parts {
		if len(out) == v.d.n {
			break
		}
		if k != v.own && strings.HasPrefix(string(kv.Value), enteredMark) {
			out = append(out, kv)
		}
	}
	return out
}

// left reports whether every participant of the round has left or been
// lost: the ready key is gone (whoever removed it saw them all leave) or no
// participant is still working. In the second case it removes the ready
// key, only while every participant is as seen (a participant that joined
// meanwhile keeps the round open).
func (v *roundView) left(ctx context.Context) (bool, error) {
	if v.ready == 0 {
		return true, nil
	}
	if v.working() > 0 {
		return false, nil
	}
	resp, err := v.d.s.Client().Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(v.d.readyKey), "=", v.ready),
		clientv3.Compare(clientv3.ModRevision(v.d.parts), "<", v.rev+1).WithPrefix(),
	).Then(clientv3.OpDelete(v.d.readyKey)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}
