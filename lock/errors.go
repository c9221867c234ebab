package lock

import (
	"errors"
	"fmt"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrLocked: TryLock found the lock held; the error is a *LockedError
	// that names the holder.
	ErrLocked = errors.New("lock: locked")
	// ErrAlreadyLocked: this Mutex value already holds the lock (locks are
	// not reentrant) or a Lock call on it is in progress.
	ErrAlreadyLocked = errors.New("lock: already held by this value")
	// ErrUnlockPending: a previous Unlock of this value could not delete its
	// key and deleting it again failed; retry, or let the lease expire.
	ErrUnlockPending = errors.New("lock: previous hold's key not yet deleted")
	// ErrNotHeld: a guarded write found the lock lost.
	ErrNotHeld = concurrency.ErrNotHeld
	// ErrInvalidName: the lock name is empty or malformed.
	ErrInvalidName = errs.InvalidName
	// ErrValueTooLarge: the holder value does not fit in one etcd request.
	ErrValueTooLarge = errs.ValueTooLarge
)

// LockedError is returned by TryLock when someone else holds the lock.
type LockedError struct {
	Holder Entry
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("lock: locked by %q (token %d)", e.Holder.Value, e.Holder.Token)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }
