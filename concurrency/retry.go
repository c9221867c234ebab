package concurrency

import (
	"time"

	"github.com/cenkalti/backoff/v4"
)

// newRetryBackoff is the backoff of the internal retry loops: from 25ms up to
// max, never giving up (the loops end on their own stop conditions).
func newRetryBackoff(max time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 25 * time.Millisecond
	b.MaxInterval = max
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// sleepOr waits d and reports true, or reports false at once when stop closes.
func sleepOr(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}
