package lock

import (
	"context"

	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/telemetry"
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
func TryHead(ctx context.Context, t *line.Ticket, rangePrefix string) (*hold.Hold, error) {
	return tryHead(ctx, t, rangePrefix, telemetry.Of(telemetry.Lock))
}
