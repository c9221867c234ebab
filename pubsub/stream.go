package pubsub

// The retry and stream plumbing of Subscription; the watch loop itself is
// concurrency.WatchFrom.

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// newRetry is the backoff of the resume loops: from 25ms up to 2s, never
// giving up (the loops end with their context).
func newRetry() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 25 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// sleepCtx waits d and reports true, or reports false once ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// stream is the channel, Done and Err of a Subscription or ConfigWatch.
type stream[T any] struct {
	c    chan T
	done chan struct{}
	err  error // set before done closes
}

func newStream[T any]() *stream[T] {
	return &stream[T]{c: make(chan T), done: make(chan struct{})}
}

// finish records why the stream ended and closes it.
func (s *stream[T]) finish(err error) {
	s.err = err
	close(s.done) // before c: whoever sees c closed finds Err set
	close(s.c)
}

// Err is why the stream ended; nil while it runs.
func (s *stream[T]) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *stream[T]) send(ctx context.Context, v T) bool {
	select {
	case s.c <- v:
		return true
	case <-ctx.Done():
		return false
	}
}
