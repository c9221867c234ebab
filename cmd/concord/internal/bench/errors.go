package bench

import "errors"

var (
	// ErrInvalidConfig: a Config that cannot run (an unknown workload, a
	// count below 1, a duration not positive, an empty prefix).
	ErrInvalidConfig = errors.New("bench: invalid config")
	// ErrPrefixInUse: the prefix already holds keys and Force is not set.
	ErrPrefixInUse = errors.New("bench: prefix already holds keys")
)
