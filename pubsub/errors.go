package pubsub

import "errors"

var (
	// ErrInvalidTopic: a topic name that concurrency.ValidateName rejects
	// (empty, too long, not UTF-8, an empty or dot-prefixed segment). The
	// error also matches concurrency.ErrInvalidName.
	ErrInvalidTopic = errors.New("pubsub: invalid topic")
	// ErrInvalidKey: a config key or prefix that is empty or malformed. The
	// error also matches concurrency.ErrInvalidName.
	ErrInvalidKey = errors.New("pubsub: invalid key")
	// ErrTooLarge: a message larger than concurrency.MaxValueBytes. The
	// error also matches concurrency.ErrValueTooLarge.
	ErrTooLarge = errors.New("pubsub: message too large")
	// ErrInvalidPosition: a subscription start revision below zero.
	ErrInvalidPosition = errors.New("pubsub: invalid start position")
	// ErrInvalidOption: a retention below one message or a non-positive
	// age or timeout.
	ErrInvalidOption = errors.New("pubsub: invalid option")
)
