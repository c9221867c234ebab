package lock

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
)

// Option configures a Mutex or RWMutex.
type Option interface{ apply(*config) }

type config struct{ value string }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithValue stores v with the holder's key, so operators (Inspect) and
// TryLock callers can see who holds or waits (a host name, a job id).
func WithValue(v string) Option { return optionFunc(func(c *config) { c.value = v }) }

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	return c
}

// Mutex is a distributed lock held under a session's lease. Holders are
// granted in request order. A Mutex value holds the lock at most once at a
// time (no reentrancy); two Mutex values, even on one session, exclude each
// other. Mutex is safe for concurrent use, though one value is meant for one
// holder at a time.
type Mutex struct {
	holder
	prefix string
}

// NewMutex returns a Mutex named name on session s.
func NewMutex(s *concurrency.Session, name string, opts ...Option) (*Mutex, error) {
	v, err := checkNew(name, opts)
	if err != nil {
		return nil, err
	}
	cs := (*session.Session)(s)
	return &Mutex{holder: holder{s: cs, value: v, scope: cs.Scope(telemetry.Lock, name)}, prefix: mutexPrefix(name)}, nil
}

func mutexPrefix(name string) string { return name + "/.lock/" }

// Lock blocks until the lock is held, ctx ends (ctx.Err()) or the session is
// lost (the session's error). A Lock that fails leaves no key behind.
func (m *Mutex) Lock(ctx context.Context) error {
	return m.acquire(ctx, "concord.lock.Lock", m.prefix, m.prefix, false)
}

// TryLock takes the lock if it is free, or returns a *LockedError (matching
// ErrLocked) naming the holder, leaving no key behind.
func (m *Mutex) TryLock(ctx context.Context) error {
	return m.acquire(ctx, "concord.lock.TryLock", m.prefix, m.prefix, true)
}

// holder is the state shared by Mutex and RWMutex: at most one hold at a
// time, and the held-resource methods over it.
type holder struct {
	s     *session.Session
	value string
	scope telemetry.Scope // recipe, and name with the name attribute

	mu      sync.Mutex
	held    *hold.Hold
	locking bool
}

// checkNew validates a lock's name and options and returns its holder value.
func checkNew(name string, opts []Option) (string, error) {
	if err := validate(name); err != nil {
		return "", err
	}
	c := newConfig(opts)
	if err := names.ValidateValue(c.value); err != nil {
		return "", err
	}
	return c.value, nil
}

func validate(name string) error { return names.Validate(name) }

// acquire joins the line with a new key under keyPrefix and waits until no
// key under rangePrefix is ahead of it (or, with try, gives up at once).
// The wait is measured, and traced as a span named span.
func (h *holder) acquire(ctx context.Context, span, keyPrefix, rangePrefix string, try bool) error {
	ctx, op := h.s.Telemetry().Begin(ctx, h.scope, span)
	err := h.acquireOp(ctx, &op, keyPrefix, rangePrefix, try)
	var token int64
	if err == nil {
		token = int64(h.current().Token())
	}
	op.End(err, try, token)
	return err
}

func (h *holder) acquireOp(ctx context.Context, op *telemetry.Op, keyPrefix, rangePrefix string, try bool) error {
	h.mu.Lock()
	prev := h.held
	if h.locking || (prev != nil && prev.Err() == nil) {
		h.mu.Unlock()
		return ErrAlreadyLocked
	}
	h.locking = true
	h.mu.Unlock()
	// A previous hold whose Unlock failed may have left its key, which
	// would queue this one behind it: delete it first.
	held, err := h.clearPrevious(ctx, prev)
	if err == nil {
		held, err = h.join(ctx, op, keyPrefix, rangePrefix, try)
	}
	h.mu.Lock()
	h.locking = false
	if held != nil {
		h.held = held
	}
	h.mu.Unlock()
	return err
}

// clearPrevious releases a previous hold whose release failed; it returns
// ErrUnlockPending if that fails again.
func (h *holder) clearPrevious(ctx context.Context, prev *hold.Hold) (*hold.Hold, error) {
	if prev == nil || prev.Released() {
		return nil, nil
	}
	if err := prev.Release(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnlockPending, err)
	}
	return nil, nil
}

func (h *holder) join(ctx context.Context, op *telemetry.Op, keyPrefix, rangePrefix string, try bool) (*hold.Hold, error) {
	var t *line.Ticket
	var err error
	if try {
		// A TryLock behind others names the holder: read it with the join.
		t, err = line.JoinHead(ctx, h.s, h.s.LineKey(keyPrefix), h.value, rangePrefix)
	} else {
		t, err = line.Join(ctx, h.s, h.s.LineKey(keyPrefix), h.value, rangePrefix, 1)
	}
	if err != nil {
		return nil, err
	}
	if !try {
		op.Joined(t.Ahead())
	}
	if !t.Admitted(1) {
		if try {
			return tryHead(ctx, t, rangePrefix, h.scope)
		}
		if err := t.Wait(ctx, 1); err != nil {
			t.Abandon()
			return nil, err
		}
	}
	return t.Hold(h.scope), nil
}

// tryHead ends a TryLock whose ticket joined behind others: it reads the
// head of the line to name the holder. If everyone ahead left meanwhile the
// lock is free and the ticket first in line, so it is held.
func tryHead(ctx context.Context, t *line.Ticket, rangePrefix string, sc telemetry.Scope) (*hold.Hold, error) {
	head, err := t.Head(ctx)
	inRange := strings.HasPrefix(t.Key(), rangePrefix)
	switch {
	case err != nil:
	case head != nil && concurrency.Token(head.CreateRevision) != t.Token():
		t.Abandon()
		return nil, &LockedError{Holder: entryOf(head)}
	case head != nil || !inRange:
		return t.Hold(sc), nil // first in line, or (a reader) no writer left
	default:
		// The ticket's own key is gone: its session was lost.
		if err = t.Session().Err(); err == nil {
			err = concurrency.ErrNotHeld
		}
	}
	t.Abandon()
	return nil, err
}

// Unlock releases the lock, deleting only this holder's key (never a newer
// holder's). It is idempotent and returns nil when the lock is not held.
func (h *holder) Unlock(ctx context.Context) error {
	cur := h.current()
	if cur == nil {
		return nil
	}
	if err := cur.Release(ctx); err != nil {
		return err // the hold is given up; its key goes on a retry or the next Lock
	}
	h.mu.Lock()
	if h.held == cur {
		h.held = nil
	}
	h.mu.Unlock()
	return nil
}

// Release is Unlock, under the name every held resource shares
// (concurrency.Held).
func (h *holder) Release(ctx context.Context) error { return h.Unlock(ctx) }

func (h *holder) current() *hold.Hold {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// Token is the current hold's fencing token (0 when not held). Tokens of one
// lock strictly increase across holds.
func (h *holder) Token() concurrency.Token {
	if cur := h.current(); cur != nil {
		return cur.Token()
	}
	return 0
}

// Key is the current holder key ("" when not held).
func (h *holder) Key() string {
	if cur := h.current(); cur != nil {
		return cur.Key()
	}
	return ""
}

// Done is closed when the current hold is lost (session lost, key deleted)
// or released. When not held it returns a closed channel.
func (h *holder) Done() <-chan struct{} {
	if cur := h.current(); cur != nil {
		return cur.Done()
	}
	return closedChan
}

// Err says why Done closed; nil while held.
func (h *holder) Err() error {
	if cur := h.current(); cur != nil {
		return cur.Err()
	}
	return concurrency.ErrReleased
}

// Guard returns comparisons that hold only while this hold lasts; use it to
// make etcd writes conditional on still holding the lock. When not held it
// returns a guard that never holds.
func (h *holder) Guard() concurrency.Guard {
	if cur := h.current(); cur != nil {
		return cur.Guard()
	}
	return concurrency.Guard(fence.New(h.s.Client(), "\x00concord/none", -1))
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

var (
	_ concurrency.Held = (*Mutex)(nil)
	_ concurrency.Held = (*RWMutex)(nil)
)

func validateValue(v string) error { return names.ValidateValue(v) }
