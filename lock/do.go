package lock

import (
	"context"

	"github.com/concordkit/concord/concurrency"
)

// Do takes the lock, runs fn while holding it and releases it
// (concurrency.Do): fn's context is cancelled (cause: the hold's error)
// when the lock is lost; the lock is released only after fn returns. Do
// returns the error of Lock, or fn's.
func (m *Mutex) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := m.Lock(ctx); err != nil {
		return err
	}
	return concurrency.Do(ctx, m, fn)
}
