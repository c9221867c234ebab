package concurrency

import "github.com/concordkit/concord/internal/stream"

// Stream is a channel of values that closes once, when the stream ends, with
// the reason readable from Err: an election's observer, a pub/sub
// subscription, a config watch. A stream never ends silently: it closes only
// when the context given to its maker ends (or, where its maker says so, on
// an error it cannot recover from), and Err then says why. It is safe for
// concurrent use; C has one reader.
type Stream[T any] stream.Stream[T]

// C delivers the stream's values in order and closes when it ends.
func (s *Stream[T]) C() <-chan T { return (*stream.Stream[T])(s).C() }

// Err says why the stream ended; nil while it runs.
func (s *Stream[T]) Err() error { return (*stream.Stream[T])(s).Err() }
