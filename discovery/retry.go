package discovery

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// transient reports whether a failed write may succeed if tried again: a
// lost connection, a leader election, a request timeout, a lease just lost
// (the next one replaces it). Bad requests and refusals are final.
func transient(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, ErrAlreadyRegistered), errors.Is(err, ErrDeregistered), errors.Is(err, ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.OutOfRange,
		codes.Unimplemented, codes.ResourceExhausted:
		return false
	}
	return true
}
