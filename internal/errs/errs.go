// Package errs holds the core's sentinel errors, so the internal packages
// and the public concurrency package (which re-exports the ones users match)
// share one value each.
package errs

import (
	"errors"
	"fmt"
)

var (
	// SessionClosed: the session was closed by its owner.
	SessionClosed = errors.New("concurrency: session closed")
	// LeaseExpired: the server no longer has the session's lease.
	LeaseExpired = errors.New("concurrency: lease expired or revoked")
	// RenewDeadline: no keepalive succeeded within the renew deadline.
	RenewDeadline = errors.New("concurrency: lease not renewed within its deadline")
	// InvalidTTL: a TTL or safety margin the session cannot use.
	InvalidTTL = errors.New("concurrency: invalid TTL")
	// TTLBelowMinimum: the server would raise the TTL (it is below the
	// server's minimum lease TTL); it matches InvalidTTL.
	TTLBelowMinimum = fmt.Errorf("%w: below the server's minimum lease TTL", InvalidTTL)
	// InvalidMargin: a safety margin below 0 or not below the TTL; it
	// matches InvalidTTL.
	InvalidMargin = fmt.Errorf("%w: safety margin must be >= 0 and below the TTL", InvalidTTL)
	// NotHeld: the resource is no longer held.
	NotHeld = errors.New("concurrency: resource no longer held")
	// KeyDeleted: a held or waiting key was deleted by someone else.
	KeyDeleted = errors.New("concurrency: key deleted")
	// Released: the resource was released by its holder.
	Released = errors.New("concurrency: released")
	// InvalidName: an empty or malformed name.
	InvalidName = errors.New("concurrency: invalid name")
	// ValueTooLarge: a value larger than etcd accepts in one request.
	ValueTooLarge = errors.New("concurrency: value too large")
	// InvalidLimit: a waiting limit below 1.
	InvalidLimit = errors.New("concurrency: limit must be at least 1")
	// NoTicket: a rejoin found no key held under the session's lease.
	NoTicket = errors.New("concurrency: no key held under this lease")
	// Compacted: a watch's start revision was compacted away.
	Compacted = errors.New("concurrency: watch start revision compacted")
	// WatchStalled: a watch was silent past its stall timeout.
	WatchStalled = errors.New("concurrency: watch stalled")
	// WatchClosed: the server or client ended a watch without a reason.
	WatchClosed = errors.New("concurrency: watch closed")
)
