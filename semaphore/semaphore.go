package semaphore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Option configures a Semaphore.
type Option interface{ apply(*config) }

type config struct {
	value  string
	follow bool
	logger *slog.Logger
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithValue stores v with each permit and wait, so Inspect shows who holds
// and who waits (a host name, a rollout step).
func WithValue(v string) Option { return optionFunc(func(c *config) { c.value = v }) }

// WithFollowLimit makes the Semaphore use whatever limit is stored in etcd,
// and follow its changes, instead of failing with ErrLimitMismatch when the
// stored limit differs from the one given to New. The limit given to New is
// stored only if none is.
func WithFollowLimit() Option { return optionFunc(func(c *config) { c.follow = true }) }

// WithLogger logs trouble (an invalid stored limit) to lg. Default: silent.
func WithLogger(lg *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = lg }) }

// Semaphore is a distributed counting semaphore: at most Limit permits of
// one name are held at a time, granted in request order, each under its
// holder's session lease. The limit is stored in etcd and can change while
// in use (SetLimit). A Semaphore owns one goroutine that follows the stored
// limit; Close stops it. It is safe for concurrent use: each Acquire returns
// a permit of its own.
type Semaphore struct {
	s        *session.Session
	name     string
	prefix   string // permits and waiters
	limitKey string
	value    string
	log      *slog.Logger
	lim      *storedLimit
	ensuring chan struct{} // held by the checkLimit storing the limit

	closeCtx   context.Context
	closeAll   context.CancelFunc
	followDone chan struct{}
	closeOnce  sync.Once

	mu          sync.Mutex
	want        int // the limit this Semaphore insists on (without follow)
	followLimit bool
}

func permitPrefix(name string) string { return name + "/.sem/p/" }
func limitKey(name string) string     { return name + "/.sem/limit" }

// New returns the semaphore name with limit permits on session s. It checks
// its input and starts following the stored limit; it makes no request
// itself. The first Acquire, TryAcquire, Limit or SetLimit stores limit in
// etcd if no limit is stored; if a different one is, Acquire and TryAcquire
// fail with ErrLimitMismatch unless WithFollowLimit is given. Close the
// Semaphore when done with it.
func New(s *concurrency.Session, name string, limit int, opts ...Option) (*Semaphore, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, fmt.Errorf("%w: got %d", ErrInvalidLimit, limit)
	}
	c := config{logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o.apply(&c)
	}
	if err := names.ValidateValue(c.value); err != nil {
		return nil, err
	}
	closeCtx, closeAll := context.WithCancel(context.Background())
	sem := &Semaphore{
		s:           (*session.Session)(s),
		name:        name,
		prefix:      permitPrefix(name),
		limitKey:    limitKey(name),
		value:       c.value,
		log:         c.logger,
		lim:         newStoredLimit(limit),
		ensuring:    make(chan struct{}, 1),
		closeCtx:    closeCtx,
		closeAll:    closeAll,
		followDone:  make(chan struct{}),
		want:        limit,
		followLimit: c.follow,
	}
	tel, attrs := sem.s.Telemetry(), telemetry.NamedRec(sem.s.NameAttr(name))
	sem.lim.report = func(n int) { tel.Semaphore.Limit.Record(context.Background(), int64(n), attrs...) }
	followCtx, stopFollow := context.WithCancel(closeCtx)
	go sem.follow(followCtx, stopFollow)
	return sem, nil
}

// Close stops following the stored limit and ends Acquire and TryAcquire
// calls in progress with ErrClosed (their keys are removed). Permits already
// granted stay held until released. It waits for the Semaphore's goroutine
// until ctx ends (then it returns ctx.Err(); the goroutine ends on its own).
// Close is safe to call more than once.
func (sem *Semaphore) Close(ctx context.Context) error {
	sem.closeOnce.Do(sem.closeAll)
	select {
	case <-sem.followDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Name is the semaphore's name.
func (sem *Semaphore) Name() string { return sem.name }

// Acquire blocks until a permit is granted, ctx ends (ctx.Err()), the
// session is lost (the session's error) or the Semaphore is closed
// (ErrClosed). Permits are granted in the order Acquire calls joined the
// line. A failed Acquire leaves no key behind.
func (sem *Semaphore) Acquire(ctx context.Context) (*Permit, error) {
	return sem.acquire(ctx, false)
}

// TryAcquire takes a permit if one is free and nobody is waiting for one,
// or returns ErrNoPermit at once, leaving no key behind.
func (sem *Semaphore) TryAcquire(ctx context.Context) (*Permit, error) {
	return sem.acquire(ctx, true)
}

func (sem *Semaphore) acquire(parent context.Context, try bool) (*Permit, error) {
	name := "concord.semaphore.Acquire"
	if try {
		name = "concord.semaphore.TryAcquire"
	}
	parent, op := sem.s.Telemetry().Begin(parent, sem.s.Scope(telemetry.Semaphore, sem.name), name)
	p, err := sem.acquireOp(parent, &op, try)
	var token int64
	if err == nil {
		token = int64(p.Token())
	}
	op.End(err, try, token)
	return p, err
}

func (sem *Semaphore) acquireOp(parent context.Context, op *telemetry.Op, try bool) (*Permit, error) {
	if sem.closeCtx.Err() != nil {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	stop := context.AfterFunc(sem.closeCtx, func() { cancel(ErrClosed) })
	defer stop()
	h, err := sem.join(ctx, op, try)
	if err != nil {
		if parent.Err() == nil && errors.Is(context.Cause(ctx), ErrClosed) {
			return nil, ErrClosed
		}
		return nil, err
	}
	return &Permit{h: h}, nil
}

func (sem *Semaphore) join(ctx context.Context, op *telemetry.Op, try bool) (*hold.Hold, error) {
	n, err := sem.checkLimit(ctx)
	if err != nil {
		return nil, err
	}
	t, err := line.Join(ctx, sem.s, sem.s.LineKey(sem.prefix), sem.value, sem.prefix, n)
	if err != nil {
		return nil, err
	}
	if !try {
		op.Joined(max(t.Ahead()-n+1, 0))
	}
	// A wait that ends on a re-read of the line has read the limit with it
	// (see waiter.wait).
	t.ReadAlong(clientv3.OpGet(sem.limitKey))
	w := &waiter{sem: sem, t: t, backoff: minRefresh}
	if err := w.wait(ctx, try); err != nil {
		t.Abandon()
		return nil, err
	}
	return t.Hold(sem.s.Scope(telemetry.Semaphore, sem.name)), nil
}

// Bounds of the pause before a ticket whose count fell behind etcd's is
// made to re-read (see waiter.limit).
const (
	minRefresh = 20 * time.Millisecond
	maxRefresh = time.Second
)

// waiter is one Acquire's place in line. Only the Acquire's goroutine uses
// it (WaitLimit calls limit on that goroutine).
type waiter struct {
	sem     *Semaphore
	t       *line.Ticket
	refresh bool
	backoff time.Duration
	timer   *time.Timer
}

// wait returns nil once a permit is granted: when nobody is ahead, or when a
// fresh read shows fewer keys ahead than the stored limit at that same
// revision. The ticket's own wait decides when that read is worth making
// (a deletion ahead brought its count below the limit, or the limit rose),
// so waiters that stay waiting make no requests.
func (w *waiter) wait(ctx context.Context, try bool) error {
	for {
		if w.t.Admitted(1) {
			// Nobody ahead, as of a read: a grant under any limit.
			return nil
		}
		if !try {
			err := w.t.WaitLimit(ctx, w.limit)
			w.stopTimer()
			if err != nil {
				return err
			}
			if w.t.Admitted(1) {
				return nil
			}
			if w.sem.readAdmits(w.t) {
				return nil
			}
		}
		ok, n, err := w.sem.confirm(ctx, w.t)
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case try:
			return ErrNoPermit
		default:
			// Refused: the limit was lowered, or the ticket counts fewer
			// keys ahead than etcd holds (it counted a deletion its re-read
			// had already seen). In the second case its wait would return
			// at once: make it read the line again first.
			cur, _ := w.sem.lim.current()
			w.refresh = w.t.Admitted(n) || w.t.Admitted(cur)
		}
	}
}

// limit is the ticket's limit function: the stored limit, with a channel
// closed when it rises. Lowering the limit wakes nobody: a waiter woken by a
// deletion finds the lower limit when its grant is confirmed.
//
// After a refused grant whose ticket still counted itself admitted, it
// returns 1 once, with a channel closed after a pause: the ticket then
// watches the key just ahead and re-reads, which leaves its count inexact,
// so the next call's limit makes it count the line afresh.
func (w *waiter) limit() (int, <-chan struct{}) {
	n, raised := w.sem.lim.current()
	if !w.refresh {
		return n, raised
	}
	w.refresh = false
	ch := make(chan struct{})
	w.stopTimer()
	w.timer = time.AfterFunc(w.backoff, func() { close(ch) })
	w.backoff = min(2*w.backoff, maxRefresh)
	return 1, ch
}

func (w *waiter) stopTimer() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

// readAdmits reports whether the wait of t ended on a re-read of the line
// that found fewer keys ahead than the limit stored at that revision (read
// with it): a grant, as confirm would find it, without confirm's read.
func (sem *Semaphore) readAdmits(t *line.Ticket) bool {
	ahead, lr, ok := t.ReadAdmitted()
	if !ok || len(lr.Kvs) == 0 {
		return false
	}
	n, err := parseLimit(lr.Kvs[0].Value)
	if err != nil {
		return false // confirm says why
	}
	sem.observeKV(lr.Kvs[0].Value, lr.Kvs[0].ModRevision)
	return ahead < n
}

// confirm reads, in one Txn, the stored limit and the keys ahead of t, and
// reports whether t is within the limit at that revision, and the limit.
func (sem *Semaphore) confirm(ctx context.Context, t *line.Ticket) (bool, int, error) {
	for {
		// KeysOnly, not CountOnly: etcd ignores revision filters on a
		// count-only range.
		resp, err := sem.s.Client().Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(t.Key()), "=", int64(t.Token()))).
			Then(
				clientv3.OpGet(sem.limitKey),
				clientv3.OpGet(sem.prefix, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(int64(t.Token())-1), clientv3.WithKeysOnly()),
			).Commit()
		if err != nil {
			if ctx.Err() != nil {
				return false, 0, ctx.Err()
			}
			if serr := sem.s.Err(); serr != nil {
				return false, 0, serr
			}
			return false, 0, err
		}
		if !resp.Succeeded {
			if serr := sem.s.Err(); serr != nil {
				return false, 0, serr
			}
			return false, 0, fmt.Errorf("%w: %s", ErrKeyDeleted, t.Key())
		}
		lkvs := resp.Responses[0].GetResponseRange().Kvs
		if len(lkvs) == 0 {
			// Someone deleted the limit: store ours again and re-read.
			sem.lim.observe(0, false, resp.Header.Revision)
			if _, err := sem.ensure(ctx); err != nil {
				return false, 0, err
			}
			continue
		}
		n, err := parseLimit(lkvs[0].Value)
		if err != nil {
			return false, 0, err
		}
		sem.observeKV(lkvs[0].Value, lkvs[0].ModRevision)
		ahead := len(resp.Responses[1].GetResponseRange().Kvs)
		return ahead < n, n, nil
	}
}
