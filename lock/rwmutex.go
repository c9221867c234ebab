package lock

import (
	"context"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
)

// RWMutex is a distributed reader/writer lock: readers share it, a writer
// holds it alone. Everyone is served in request order, so a waiting writer
// holds back readers that come after it (no writer starvation). An RWMutex
// value holds at most one read or write hold at a time; it is safe for
// concurrent use.
type RWMutex struct {
	holder
	prefix string
}

// NewRWMutex returns an RWMutex named name on session s. Its keys are apart
// from the Mutex of the same name.
func NewRWMutex(s *concurrency.Session, name string, opts ...Option) (*RWMutex, error) {
	v, err := checkNew(name, opts)
	if err != nil {
		return nil, err
	}
	cs := (*session.Session)(s)
	return &RWMutex{holder: holder{s: cs, value: v, scope: cs.Scope(telemetry.RWLock, name)}, prefix: rwPrefix(name)}, nil
}

func rwPrefix(name string) string { return name + "/.rw/" }

// RLock blocks until a read hold is granted: no writer is ahead.
func (rw *RWMutex) RLock(ctx context.Context) error {
	return rw.acquire(ctx, "concord.rwlock.RLock", rw.prefix+"r/", rw.prefix+"w/", false)
}

// TryRLock takes a read hold if no writer holds or waits, else ErrLocked.
func (rw *RWMutex) TryRLock(ctx context.Context) error {
	return rw.acquire(ctx, "concord.rwlock.TryRLock", rw.prefix+"r/", rw.prefix+"w/", true)
}

// Lock blocks until a write hold is granted: nobody is ahead.
func (rw *RWMutex) Lock(ctx context.Context) error {
	return rw.acquire(ctx, "concord.rwlock.Lock", rw.prefix+"w/", rw.prefix, false)
}

// TryLock takes a write hold if nobody holds or waits, else ErrLocked.
func (rw *RWMutex) TryLock(ctx context.Context) error {
	return rw.acquire(ctx, "concord.rwlock.TryLock", rw.prefix+"w/", rw.prefix, true)
}

// RUnlock releases a read hold; it is Unlock under the name readers expect.
func (rw *RWMutex) RUnlock(ctx context.Context) error { return rw.Unlock(ctx) }
