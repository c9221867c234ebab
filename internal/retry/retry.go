// Package retry is the one home of concord's retry schedules: exponential
// backoff policies (github.com/cenkalti/backoff/v4) with named intervals, and
// sleeps that end early when their context or stop channel does. Every retry
// loop in the module takes its schedule from here.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Policy is a backoff schedule: the first pause, and the most any pause
// grows to. Loops built on it never give up by elapsed time; they end on
// their own stop conditions (a context, a session's end).
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// The named schedules.
var (
	// Request retries one etcd request (a clean-up delete, an undo, a
	// re-read): quick first, at most a second apart.
	Request = Policy{Initial: 25 * time.Millisecond, Max: time.Second}
	// Watch resumes a broken watch (Follow, subscriptions, observers).
	Watch = Policy{Initial: 25 * time.Millisecond, Max: 2 * time.Second}
	// Write retries a write that must land eventually (a registration).
	Write = Policy{Initial: 50 * time.Millisecond, Max: time.Second}
	// Conflict retries a compare-and-swap that lost a race: at once, then
	// briefly apart.
	Conflict = Policy{Initial: time.Millisecond, Max: 50 * time.Millisecond}
	// Overload retries a write an overloaded server refused before
	// proposing it ("too many requests"): its pauses are randomized, so
	// that many clients refused at once come back spread out.
	Overload = Policy{Initial: 50 * time.Millisecond, Max: 2 * time.Second}
	// Session replaces a lost session (Supervise, a campaign's retry).
	Session = Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}
)

// UpTo returns the policy with its pauses capped at max (for loops whose
// cap follows a TTL).
func (p Policy) UpTo(max time.Duration) Policy {
	p.Max = max
	return p
}

// New returns a fresh backoff on the policy. It is not safe for
// concurrent use; each loop makes its own.
func (p Policy) New() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = p.Initial
	b.MaxInterval = max(p.Max, p.Initial)
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// Sleep waits d and reports true, or reports false as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) bool {
	return SleepOr(ctx.Done(), d)
}

// SleepOr waits d and reports true, or reports false as soon as stop closes.
func SleepOr(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}
