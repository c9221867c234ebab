package lock

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
)

// Multi holds several named locks as one (Curator's InterProcessMultiLock).
// Lock takes them one by one in a global order (sorted by name), so two
// Multis over overlapping sets, or a Multi and Mutexes, cannot deadlock:
// whoever holds the lowest contended lock gets all the others in turn.
// Each lock is an ordinary Mutex lock (a Mutex of the same name excludes a
// Multi holding it) with its own fencing token. The hold is lost as soon as
// any of its locks is lost; the others are then released at once, so their
// waiters need not wait for the lease. One Guard covers every lock.
//
// A Multi is safe for concurrent use, though one value holds its set at
// most once at a time (no reentrancy).
type Multi struct {
	s     *concurrency.Session
	names []string // sorted, unique
	value string

	mu      sync.Mutex
	cur     *multiHold
	locking bool
}

// multiHold is one hold of a Multi's set: the locks' holds, in name order,
// and the monitor that ends it when any is lost.
type multiHold struct {
	held     []*hold.Hold
	done     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	loopDone chan struct{}
	// keep: on loss, leave the other locks for the caller to release (Do
	// releases them once its function has returned).
	keep bool

	mu       sync.Mutex
	err      error
	released bool
}

// NewMulti returns a Multi over the locks names on session s. Names are
// checked like a Mutex's; duplicates count once; at least one is needed.
// It makes no request.
func NewMulti(s *concurrency.Session, names []string, opts ...Option) (*Multi, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no lock names", ErrInvalidName)
	}
	for _, n := range names {
		if err := validate(n); err != nil {
			return nil, err
		}
	}
	c := newConfig(opts)
	if err := validateValue(c.value); err != nil {
		return nil, err
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	return &Multi{s: s, names: slices.Compact(sorted), value: c.value}, nil
}

// Names are the Multi's lock names, in the order they are taken.
func (m *Multi) Names() []string { return slices.Clone(m.names) }

// Lock takes every lock, in name order, blocking until all are held, ctx
// ends (ctx.Err()) or the session is lost (the session's error). A Lock
// that fails releases what it took and leaves no key behind.
func (m *Multi) Lock(ctx context.Context) error { return m.lock(ctx, false, false) }

// TryLock takes every lock if each is free, or returns a *LockedError
// (matching ErrLocked) naming a holder, releasing what it took.
func (m *Multi) TryLock(ctx context.Context) error { return m.lock(ctx, true, false) }

func (m *Multi) lock(ctx context.Context, try, keep bool) error {
	m.mu.Lock()
	if m.locking || (m.cur != nil && m.cur.Err() == nil) {
		m.mu.Unlock()
		return ErrAlreadyLocked
	}
	prev := m.cur
	m.locking = true
	m.mu.Unlock()
	var h *multiHold
	err := ErrUnlockPending
	if prev == nil || prev.release(ctx) == nil {
		h, err = m.acquire(ctx, try, keep)
	}
	m.mu.Lock()
	m.locking = false
	if h != nil {
		m.cur = h
	}
	m.mu.Unlock()
	return err
}

func (m *Multi) acquire(ctx context.Context, try, keep bool) (*multiHold, error) {
	var held []*hold.Hold
	for _, name := range m.names {
		cs := (*session.Session)(m.s)
		hd := holder{s: cs, value: m.value, scope: cs.Scope(telemetry.Lock, name)}
		p := mutexPrefix(name)
		octx, op := cs.Telemetry().Begin(ctx, hd.scope, "concord.lock.Multi")
		h, err := hd.join(octx, &op, p, p, try)
		var token int64
		if h != nil {
			token = int64(h.Token())
		}
		op.End(err, try, token)
		if err != nil {
			releaseAll(held)
			return nil, err
		}
		held = append(held, h)
	}
	mh := &multiHold{held: held, done: make(chan struct{}), stop: make(chan struct{}), loopDone: make(chan struct{}), keep: keep}
	go mh.monitor()
	return mh, nil
}

// releaseAll releases holds with a bounded wait of its own (the caller's
// context may be what failed); a failed release is retried by the session
// and the lease removes the key in any case.
func releaseAll(held []*hold.Hold) error {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	var errs []error
	for _, h := range held {
		errs = append(errs, h.Release(ctx))
	}
	return errors.Join(errs...)
}

// monitor ends the hold when any lock is lost: Done closes with that lock's
// error, then (unless keep) the other locks are released.
func (mh *multiHold) monitor() {
	defer close(mh.loopDone)
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(mh.stop)}}
	for _, h := range mh.held {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(h.Done())})
	}
	i, _, _ := reflect.Select(cases)
	if i == 0 {
		return // released
	}
	lost := mh.held[i-1]
	mh.end(fmt.Errorf("lock: %s lost: %w", lost.Key(), lost.Err()))
	if !mh.keep {
		_ = releaseAll(mh.held)
	}
}

func (mh *multiHold) end(err error) {
	mh.mu.Lock()
	defer mh.mu.Unlock()
	if mh.err == nil {
		mh.err = err
		close(mh.done)
	}
}

// Err is why the hold ended; nil while held.
func (mh *multiHold) Err() error {
	mh.mu.Lock()
	defer mh.mu.Unlock()
	return mh.err
}

// release stops the monitor and releases every lock. It is idempotent; if
// a delete fails the error is returned and a later call tries again.
func (mh *multiHold) release(ctx context.Context) error {
	mh.mu.Lock()
	if mh.released {
		mh.mu.Unlock()
		return nil
	}
	mh.mu.Unlock()
	mh.stopOnce.Do(func() { close(mh.stop) })
	<-mh.loopDone
	mh.end(concurrency.ErrReleased)
	var errs []error
	for _, h := range mh.held {
		errs = append(errs, h.Release(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	mh.mu.Lock()
	mh.released = true
	mh.mu.Unlock()
	return nil
}

func (m *Multi) current() *multiHold {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// Unlock releases every lock, deleting only this hold's keys (never a newer
// holder's). It is idempotent and returns nil when nothing is held.
func (m *Multi) Unlock(ctx context.Context) error {
	cur := m.current()
	if cur == nil {
		return nil
	}
	if err := cur.release(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	if m.cur == cur {
		m.cur = nil
	}
	m.mu.Unlock()
	return nil
}

// Release is Unlock: the held-resource contract's release.
func (m *Multi) Release(ctx context.Context) error { return m.Unlock(ctx) }

// Token is the highest of the current hold's fencing tokens (0 when not
// held). It strictly increases across holds of the same set of locks (a
// later holder creates its key on the last lock after the earlier holder
// released it), so it fences a resource that only this set guards; to fence
// a resource of one lock, use TokenOf.
func (m *Multi) Token() concurrency.Token {
	var t concurrency.Token
	if cur := m.current(); cur != nil {
		for _, h := range cur.held {
			t = max(t, h.Token())
		}
	}
	return t
}

// TokenOf is the fencing token of the lock name in the current hold (0 when
// not held or not one of the Multi's names). Tokens of one lock strictly
// increase across its holders, Mutex or Multi.
func (m *Multi) TokenOf(name string) concurrency.Token {
	cur := m.current()
	if cur == nil {
		return 0
	}
	if i, ok := slices.BinarySearch(m.names, name); ok {
		return cur.held[i].Token()
	}
	return 0
}

// Done is closed when the hold is lost (any lock's session lost or key
// deleted) or released. When not held it returns a closed channel.
func (m *Multi) Done() <-chan struct{} {
	if cur := m.current(); cur != nil {
		return cur.done
	}
	return closedChan
}

// Err says why Done closed: concurrency.ErrReleased, or the first lost
// lock's error (wrapping ErrKeyDeleted or the session's error); nil while
// held.
func (m *Multi) Err() error {
	if cur := m.current(); cur != nil {
		return cur.Err()
	}
	return concurrency.ErrReleased
}

// Guard returns comparisons that hold only while every lock of this hold is
// held (one transaction compares every lock's key). When not held it
// returns a guard that never holds.
func (m *Multi) Guard() concurrency.Guard {
	cur := m.current()
	if cur == nil {
		return concurrency.Guard(fence.New(m.s.Client(), "\x00concord/none", -1))
	}
	gs := make([]fence.Guard, len(cur.held))
	for i, h := range cur.held {
		gs[i] = fence.Guard(h.Guard())
	}
	return concurrency.Guard(fence.Combine(gs...))
}

// Do takes every lock and runs fn while holding them (concurrency.Do):
// fn's context is cancelled (cause: the lost lock's error) as soon as any
// lock is lost; the locks still held are released only after fn returns, so
// no one else takes them while fn's work drains. Do returns Lock's error,
// or fn's.
func (m *Multi) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := m.lock(ctx, false, true); err != nil {
		return err
	}
	return concurrency.Do(ctx, m, fn)
}

// releaseTimeout bounds the release of the locks still held after one was
// lost.
const releaseTimeout = 5 * time.Second
