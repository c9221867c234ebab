package pubsub

import (
	"errors"

	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrInvalidTopic: a topic name that is empty, longer than 1 KiB, not
	// UTF-8 or with an empty or dot-prefixed segment. The error also
	// matches ErrInvalidName.
	ErrInvalidTopic = errors.New("pubsub: invalid topic")
	// ErrInvalidKey: a config key or prefix that is empty or malformed. The
	// error also matches ErrInvalidName.
	ErrInvalidKey = errors.New("pubsub: invalid key")
	// ErrTooLarge: a message larger than etcd's request limit (1.5 MiB less
	// 4 KiB). The error also matches ErrValueTooLarge.
	ErrTooLarge = errors.New("pubsub: message too large")
	// ErrInvalidPosition: a subscription start revision below zero.
	ErrInvalidPosition = errors.New("pubsub: invalid start position")
	// ErrInvalidOption: a retention below one message, a non-positive age
	// or timeout, or WithKeepUntilCompaction combined with WithKeepLast or WithKeepFor.
	ErrInvalidOption = errors.New("pubsub: invalid option")
	// ErrRetentionMode: a Publish to a topic that keeps its messages the
	// other way (KeepUntilCompaction on a topic of one key per message, or
	// the reverse). A topic's mode is fixed by its first message.
	ErrRetentionMode = errors.New("pubsub: topic has another retention mode")
	// ErrInvalidName: a malformed name, matched by ErrInvalidTopic and
	// ErrInvalidKey errors too.
	ErrInvalidName = errs.InvalidName
	// ErrValueTooLarge: a value past etcd's request limit, matched by
	// ErrTooLarge errors too.
	ErrValueTooLarge = errs.ValueTooLarge
)
