package barrier

import (
	"errors"
	"fmt"
	"strings"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrInvalidName: the barrier name is empty or malformed.
	ErrInvalidName = errs.InvalidName
	// ErrValueTooLarge: a participant value does not fit in one etcd
	// request.
	ErrValueTooLarge = errs.ValueTooLarge
	// ErrInvalidCount: a double barrier's participant count is below 1.
	ErrInvalidCount = errors.New("barrier: participant count must be at least 1")
	// ErrNotHeld: a guarded Hold or Release found the guard's resource
	// lost, and changed nothing.
	ErrNotHeld = concurrency.ErrNotHeld
	// ErrAlreadyEntered: Enter on a DoubleBarrier that has entered and not
	// yet left.
	ErrAlreadyEntered = errors.New("barrier: already entered")
	// ErrNotEntered: Leave on a DoubleBarrier that has not entered.
	ErrNotEntered = errors.New("barrier: not entered")
	// ErrKeyDeleted: a participant's key was deleted by someone else.
	ErrKeyDeleted = concurrency.ErrKeyDeleted
	// ErrParticipantLost: Leave completed (every participant has left), but
	// some participants did not leave: their sessions were lost (or their
	// keys deleted) after they entered. The error is a *LostError naming
	// them.
	ErrParticipantLost = errors.New("barrier: participant lost")
	// ErrInProgress: an Enter or Leave of this participant is in progress.
	ErrInProgress = errors.New("barrier: a call of this participant is in progress")
	// ErrClosed: the DoubleBarrier was closed.
	ErrClosed = errors.New("barrier: closed")
)

// LostError is what Leave returns when participants counted as left because
// they were lost rather than because they left: the barrier was passed, but
// their work may not be done.
type LostError struct {
	// Values are the lost participants' values (see WithValue), in the
	// order their loss was seen.
	Values []string
}

func (e *LostError) Error() string {
	return fmt.Sprintf("barrier: %d participant(s) lost instead of leaving: %s", len(e.Values), strings.Join(e.Values, ", "))
}

// Is makes errors.Is(err, ErrParticipantLost) true.
func (e *LostError) Is(target error) bool { return target == ErrParticipantLost }
