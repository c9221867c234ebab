package queue

import (
	"errors"
	"fmt"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrEmpty: TryClaim found no item ready.
	ErrEmpty = errors.New("queue: no item ready")
	// ErrClaimLost: the claim ended (session lost, claim deleted) before
	// Ack or Nack; the item is, or will be, delivered again. It matches
	// concurrency.ErrNotHeld.
	ErrClaimLost = fmt.Errorf("queue: claim lost: %w", concurrency.ErrNotHeld)
	// ErrTooLarge: the payload with its metadata exceeds etcd's request
	// limit.
	ErrTooLarge = errors.New("queue: payload too large")
	// ErrInvalidPriority: a priority outside 0..255.
	ErrInvalidPriority = errors.New("queue: priority must be within 0..255")
	// ErrInvalidOption: a negative delay or delivery limit.
	ErrInvalidOption = errors.New("queue: invalid option")
	// ErrNoDeadLetter: Requeue or DeleteDead found no dead letter with that
	// id (or the id is malformed).
	ErrNoDeadLetter = errors.New("queue: no such dead letter")
	// ErrInvalidName: the queue name is empty or malformed.
	ErrInvalidName = errs.InvalidName
)
