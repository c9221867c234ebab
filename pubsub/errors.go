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
	// ErrInvalidOption: a retention below one message, a non-positive age
	// or timeout, or KeepUntilCompaction combined with KeepLast or KeepFor.
	ErrInvalidOption = errors.New("pubsub: invalid option")
	// ErrRetentionMode: a Publish to a topic that keeps its messages the
	// other way (KeepUntilCompaction on a topic of one key per message, or
	// the reverse). A topic's mode is fixed by its first message.
	ErrRetentionMode = errors.New("pubsub: topic has another retention mode")
)
