package concurrency

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrSessionLost is what a supervised function's context reports as its
// cause (context.Cause) when the session under it was lost.
var ErrSessionLost = errors.New("concurrency: session lost")

// Supervise runs fn with a fresh session and runs it again, with a new
// session and exponential backoff, each time the session is lost. fn's
// context is cancelled (cause ErrSessionLost) when its session is lost or
// ctx ends; Supervise waits for fn to return before closing that session
// and starting another.
//
// Supervise returns when ctx ends (ctx.Err()), when fn returns nil while its
// session is live (nil), or when fn returns an error while its session is
// live (that error). Failures to create a session are retried with backoff
// until ctx ends.
func Supervise(ctx context.Context, client *clientv3.Client, fn func(ctx context.Context, s *Session) error, opts ...SessionOption) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	for {
		s, err := NewSession(ctx, client, opts...)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrInvalidTTL) || errors.Is(err, ErrInvalidMargin) || errors.Is(err, ErrTTLBelowMinimum) {
				return err
			}
			if !sleepOr(ctx.Done(), b.NextBackOff()) {
				return ctx.Err()
			}
			continue
		}
		started := time.Now()
		err = runSupervised(ctx, s, fn)
		lost := s.Err() != nil
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
		_ = s.Close(closeCtx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case !lost:
			return err
		}
		// A run that lasted a while was healthy: start the backoff afresh.
		if time.Since(started) > 2*s.ttl {
			b.Reset()
		}
		if !sleepOr(ctx.Done(), b.NextBackOff()) {
			return ctx.Err()
		}
	}
}

func runSupervised(ctx context.Context, s *Session, fn func(context.Context, *Session) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-s.Done():
			cancel(ErrSessionLost)
		case <-fctx.Done():
		}
	}()
	err := fn(fctx, s)
	cancel(nil)
	<-watcherDone
	return err
}
