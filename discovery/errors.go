package discovery

import "errors"

var (
	// ErrInvalidService: a service name that is empty, too long, not valid
	// UTF-8, contains "/" or NUL, or starts with ".".
	ErrInvalidService = errors.New("discovery: invalid service name")
	// ErrInvalidID: an instance ID with the same faults as ErrInvalidService.
	ErrInvalidID = errors.New("discovery: invalid instance id")
	// ErrInvalidAddr: an address that is not host:port with a numeric port
	// between 1 and 65535.
	ErrInvalidAddr = errors.New("discovery: invalid address")
	// ErrInvalidWeight: a negative weight.
	ErrInvalidWeight = errors.New("discovery: invalid weight")
	// ErrRecordTooLarge: the instance's record does not fit in one etcd
	// request.
	ErrRecordTooLarge = errors.New("discovery: instance record too large")
	// ErrIDChanged: Update was given an instance with another ID.
	ErrIDChanged = errors.New("discovery: update cannot change the instance id")
	// ErrAlreadyRegistered: the service already has a live instance with
	// this ID, registered by another Registry (or by this one).
	ErrAlreadyRegistered = errors.New("discovery: instance id already registered")
	// ErrDeregistered: the registration was deregistered.
	ErrDeregistered = errors.New("discovery: deregistered")
	// ErrClosed: the Registry (or Watcher) was closed.
	ErrClosed = errors.New("discovery: closed")
	// ErrNoInstances: the resolver found no instance that is not draining.
	ErrNoInstances = errors.New("discovery: no instances")
)
