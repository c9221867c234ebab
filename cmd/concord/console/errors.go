package console

import "errors"

var (
	// ErrNeedToken: a listen address that is not loopback, without a UI
	// token nor client certificates required (anyone who can reach the
	// port could read the cluster's state).
	ErrNeedToken = errors.New("console: a non-loopback listen address needs a UI token or client certificates")
	// ErrInvalidOption: a nil client, a bad prefix or a non-positive
	// interval.
	ErrInvalidOption = errors.New("console: invalid option")
	// ErrClosed: the Console was closed.
	ErrClosed = errors.New("console: closed")
)
