package semaphore

import (
	"context"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/hold"
)

// Permit is one granted permit, held under its holder's session lease. It is
// safe for concurrent use.
type Permit struct {
	h *hold.Hold
}

var _ concurrency.Held = (*Permit)(nil)

// Token is the permit's fencing token: its key's create revision. Tokens of
// one semaphore are unique and increase in grant order.
func (p *Permit) Token() concurrency.Token { return p.h.Token() }

// Key is the permit's key in etcd.
func (p *Permit) Key() string { return p.h.Key() }

// Value is the value stored with the permit (see WithValue).
func (p *Permit) Value() string { return p.h.Value() }

// Done is closed when the permit is lost (its session is lost or its key
// deleted by someone else) or released.
func (p *Permit) Done() <-chan struct{} { return p.h.Done() }

// Err says why Done closed: concurrency.ErrReleased, ErrKeyDeleted or the
// session's error; nil while held.
func (p *Permit) Err() error { return p.h.Err() }

// Guard returns comparisons that hold only while the permit is held, for
// etcd writes that must land only then.
func (p *Permit) Guard() concurrency.Guard { return p.h.Guard() }

// Release gives the permit back, deleting only its own key (never a newer
// one). It is idempotent. If the delete fails the error is returned and a
// later Release tries again; the session keeps trying meanwhile, and the
// lease removes the key in any case when the session ends.
func (p *Permit) Release(ctx context.Context) error { return p.h.Release(ctx) }

// Do runs fn while holding a permit (concurrency.Do): fn's context is
// cancelled (cause: the permit's error) when the permit is lost; the permit
// is released only after fn returns. Do returns Acquire's error, or fn's.
func (sem *Semaphore) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	p, err := sem.Acquire(ctx)
	if err != nil {
		return err
	}
	return concurrency.Do(ctx, p, fn)
}
