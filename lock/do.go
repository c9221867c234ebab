package lock

import (
	"context"
	"time"

	"github.com/concordkit/concord/concurrency"
)

// releaseTimeout bounds the release after fn returns when the caller's
// context has already ended.
const releaseTimeout = 5 * time.Second

// Do runs fn while holding the lock name. fn's context is cancelled (cause:
// the hold's error) when the lock is lost; the lock is released only after
// fn returns. Do returns the error of Lock, or fn's error.
func Do(ctx context.Context, s *concurrency.Session, name string, fn func(ctx context.Context) error, opts ...Option) error {
	m, err := NewMutex(s, name, opts...)
	if err != nil {
		return err
	}
	if err := m.Lock(ctx); err != nil {
		return err
	}
	return runHeld(ctx, m.current(), fn)
}

// runHeld runs fn with a context cancelled when h is lost, then releases h.
func runHeld(ctx context.Context, h *concurrency.Held, fn func(context.Context) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-h.Done():
			cancel(h.Err())
		case <-stop:
		}
	}()
	err := fn(fctx)
	close(stop)
	<-watcherDone
	cancel(nil)
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer rcancel()
	if rerr := h.Release(rctx); err == nil {
		err = rerr
	}
	return err
}
