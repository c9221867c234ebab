package lock

import (
	"context"

	"github.com/concordkit/concord/concurrency"
)

// Do runs fn while holding the lock name (concurrency.Do): fn's context is
// cancelled (cause: the hold's error) when the lock is lost; the lock is
// released only after fn returns. Do returns the error of Lock, or fn's.
func Do(ctx context.Context, s *concurrency.Session, name string, fn func(ctx context.Context) error, opts ...Option) error {
	m, err := NewMutex(s, name, opts...)
	if err != nil {
		return err
	}
	if err := m.Lock(ctx); err != nil {
		return err
	}
	return concurrency.Do(ctx, m, fn)
}
