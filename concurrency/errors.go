package concurrency

import "errors"

var (
	// ErrSessionClosed: the session was closed by its owner.
	ErrSessionClosed = errors.New("concurrency: session closed")
	// ErrLeaseExpired: the server no longer has the session's lease (it
	// expired or was revoked).
	ErrLeaseExpired = errors.New("concurrency: lease expired or revoked")
	// ErrRenewDeadline: no keepalive succeeded within the renew deadline
	// (TTL minus the safety margin), so the lease may expire at any moment
	// and the session counts itself lost.
	ErrRenewDeadline = errors.New("concurrency: lease not renewed within its deadline")
	// ErrInvalidTTL: the TTL is not a whole number of seconds of at least 1.
	ErrInvalidTTL = errors.New("concurrency: TTL must be a whole number of seconds, at least 1s")
	// ErrTTLBelowMinimum: the server raised the TTL because it is below the
	// server's minimum (1.5 election timeouts, rounded up to a second: 2s
	// with etcd's default settings).
	ErrTTLBelowMinimum = errors.New("concurrency: TTL below the server's minimum lease TTL")
	// ErrInvalidMargin: the safety margin is negative or not below the TTL.
	ErrInvalidMargin = errors.New("concurrency: safety margin must be >= 0 and below the TTL")
	// ErrNotHeld: a guarded write found the resource no longer held (its key
	// is gone or belongs to a newer holder).
	ErrNotHeld = errors.New("concurrency: resource no longer held")
	// ErrKeyDeleted: a held or waiting key was deleted by someone else.
	ErrKeyDeleted = errors.New("concurrency: key deleted")
	// ErrInvalidName: an empty name or prefix.
	ErrInvalidName = errors.New("concurrency: invalid name")
	// ErrValueTooLarge: a value larger than etcd accepts in one request.
	ErrValueTooLarge = errors.New("concurrency: value too large")
	// ErrInvalidLimit: a waiting limit below 1.
	ErrInvalidLimit = errors.New("concurrency: limit must be at least 1")
)

// ErrReleased: the resource was released by its holder.
var ErrReleased = errors.New("concurrency: released")

// ErrNoTicket: Rejoin found no key held under the session's lease.
var ErrNoTicket = errors.New("concurrency: no key held under this lease")
