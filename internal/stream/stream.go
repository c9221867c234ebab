// Package stream is the one stream type behind every concord stream
// (concurrency.Stream, and through it election observers, pub/sub
// subscriptions and config watches, discovery's and Follow's updates): a
// channel of values that closes once, when the producer finishes, with the
// reason readable from Err.
package stream

import "context"

// Stream carries values from one producer goroutine to one reader. Its
// producer calls Send for each value and Finish once at the end; C closes
// then, and Err says why. It is safe for concurrent use.
type Stream[T any] struct {
	c    chan T
	done chan struct{}
	err  error // set before done closes
}

// New returns an open stream.
func New[T any]() *Stream[T] {
	return &Stream[T]{c: make(chan T), done: make(chan struct{})}
}

// C is the stream's values, in order; it closes when the stream ends.
func (s *Stream[T]) C() <-chan T { return s.c }

// Done is closed when the stream has ended (before C closes).
func (s *Stream[T]) Done() <-chan struct{} { return s.done }

// Err is why the stream ended; nil while it runs.
func (s *Stream[T]) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Send delivers v, or reports false when ctx ends first.
func (s *Stream[T]) Send(ctx context.Context, v T) bool {
	select {
	case s.c <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

// Finish records why the stream ended and closes it. Call it once, from the
// producer.
func (s *Stream[T]) Finish(err error) {
	s.err = err
	close(s.done) // before c: whoever sees c closed finds Err set
	close(s.c)
}
