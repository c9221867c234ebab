package lock

import (
	"context"

	"github.com/concordkit/concord/concurrency"
)

// Line is where a Mutex named name queues its keys.
func Line(name string) string { return mutexPrefix(name) }

// RWLine is where an RWMutex named name queues readers' and writers' keys.
func RWLine(name string) (readers, writers string) {
	p := rwPrefix(name)
	return p + "r/", p + "w/"
}

// TryHead runs what TryLock runs once its ticket, joined behind others,
// must name the holder.
func TryHead(ctx context.Context, t *concurrency.Ticket, rangePrefix string) (*concurrency.Held, error) {
	return tryHead(ctx, t, rangePrefix)
}
