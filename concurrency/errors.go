package concurrency

import "github.com/concordkit/concord/internal/errs"

// Why a session ended, from Session.Err (and a held resource's Err when the
// session took it down).
var (
	// ErrSessionClosed: the session was closed by its owner.
	ErrSessionClosed = errs.SessionClosed
	// ErrLeaseExpired: the server no longer has the session's lease (it
	// expired or was revoked).
	ErrLeaseExpired = errs.LeaseExpired
	// ErrRenewDeadline: no keepalive succeeded within the renew deadline
	// (TTL minus the safety margin), so the lease may expire at any moment
	// and the session counts itself lost.
	ErrRenewDeadline = errs.RenewDeadline
)

// What a held resource reports.
var (
	// ErrNotHeld: the resource is no longer held (its key is gone or belongs
	// to a newer holder). Every recipe's "not held any more" error (a stale
	// Proclaim, Ack or checkpoint save) matches it.
	ErrNotHeld = errs.NotHeld
	// ErrReleased: the resource was released by its holder (Err after a
	// release, or of a resource never acquired).
	ErrReleased = errs.Released
	// ErrKeyDeleted: a held or waiting key was deleted by someone else.
	ErrKeyDeleted = errs.KeyDeleted
)

// Bad input, rejected before anything is written (each recipe's errors.go
// has its own: ErrInvalidName, ErrValueTooLarge, ...).
var (
	// ErrInvalidTTL: a TTL that is not a whole number of seconds of at
	// least 1, one below the server's minimum lease TTL (1.5 election
	// timeouts rounded up to a second: 2s with etcd's defaults), or a
	// safety margin below 0 or not below the TTL.
	ErrInvalidTTL = errs.InvalidTTL
)
