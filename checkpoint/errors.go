package checkpoint

import (
	"errors"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrNotFound: no checkpoint is saved for the task.
	ErrNotFound = errors.New("checkpoint: not found")
	// ErrNotHeld: the guard no longer holds (the task was taken over or the
	// holder's session was lost); nothing was written.
	ErrNotHeld = concurrency.ErrNotHeld
	// ErrStale: a checkpoint was saved since this saver last loaded or
	// saved it; nothing was written. Load again before saving.
	ErrStale = errors.New("checkpoint: a newer checkpoint exists")
	// ErrTooLarge: the progress does not fit in one etcd request.
	ErrTooLarge = errors.New("checkpoint: progress too large")
	// ErrInvalidName: the task name is empty or malformed.
	ErrInvalidName = errs.InvalidName
)
