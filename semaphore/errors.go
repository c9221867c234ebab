package semaphore

import (
	"errors"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrNoPermit: TryAcquire found every permit taken (or others already
	// waiting for one); it left no key behind.
	ErrNoPermit = errors.New("semaphore: no permit available")
	// ErrLimitMismatch: the limit stored in etcd differs from the one this
	// Semaphore was created with (or last set). Create it WithFollowLimit
	// to use whatever limit is stored, or change the stored one with
	// SetLimit.
	ErrLimitMismatch = errors.New("semaphore: configured limit differs from the stored limit")
	// ErrClosed: the Semaphore was closed (Acquire, TryAcquire and waits in
	// progress end with it; permits already held are unaffected).
	ErrClosed = errors.New("semaphore: closed")
	// ErrInvalidLimit: a limit below 1, or a stored limit that is not a
	// whole number of at least 1.
	ErrInvalidLimit = errs.InvalidLimit
	// ErrInvalidName: the semaphore name is empty or malformed.
	ErrInvalidName = errs.InvalidName
	// ErrValueTooLarge: the holder value does not fit in one etcd request.
	ErrValueTooLarge = errs.ValueTooLarge
	// ErrNotHeld: a guarded write found the permit gone.
	ErrNotHeld = concurrency.ErrNotHeld
	// ErrKeyDeleted: a permit's or waiter's key was deleted by someone else.
	ErrKeyDeleted = concurrency.ErrKeyDeleted
)
