package counter

import (
	"errors"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrInvalidName: the counter name is empty or malformed.
	ErrInvalidName = errs.InvalidName
	// ErrNotHeld: the counter is guarded (WithGuard) and the guard's
	// resource is no longer held; nothing was written.
	ErrNotHeld = concurrency.ErrNotHeld
	// ErrOverflow: Add would take the value past the int64 range; nothing
	// was written.
	ErrOverflow = errors.New("counter: int64 overflow")
	// ErrNotInteger: the stored value is not a decimal int64 (someone else
	// wrote the key).
	ErrNotInteger = errors.New("counter: stored value is not an integer")
)
