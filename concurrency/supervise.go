package concurrency

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
)

// Supervise runs fn with a fresh session and runs it again, with a new
// session and exponential backoff, each time the session is lost. fn's
// context is cancelled (cause: the session's error, ErrLeaseExpired or
// ErrRenewDeadline) when its session is lost or
// ctx ends; Supervise waits for fn to return before closing that session
// and starting another.
//
// Supervise returns when ctx ends (ctx.Err()), when fn returns nil while its
// session is live (nil), or when fn returns an error while its session is
// live (that error). Failures to create a session are retried with backoff
// until ctx ends.
func Supervise(ctx context.Context, client *clientv3.Client, fn func(ctx context.Context, s *Session) error, opts ...SessionOption) error {
	b := retry.Session.New()
	var cfg session.Config
	for _, o := range opts {
		o.apply(&cfg)
	}
	sup := &telemetry.For(cfg.MeterProvider, cfg.TracerProvider).Supervisor
	pause := func() bool {
		d := b.NextBackOff()
		sup.Backoff.Record(ctx, d.Seconds())
		return retry.Sleep(ctx, d)
	}
	for {
		s, err := NewSession(ctx, client, opts...)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrInvalidTTL) {
				return err
			}
			if !pause() {
				return ctx.Err()
			}
			continue
		}
		started := time.Now()
		err = runSupervised(ctx, s, fn)
		lost := s.Err() != nil
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), session.RequestTimeout)
		if err := s.Close(closeCtx); err != nil {
			// The lease expires by itself within its TTL.
			s.core().Log().Debug("concord supervise: closing the session failed", "lease", int64(s.Lease()), "err", err)
		}
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case !lost:
			return err
		}
		// A session that was established and kept alive for a keepalive
		// interval was lost to the cluster, not to this client's retries:
		// start the backoff afresh, so a role comes back promptly after
		// each of a series of outages (a backoff grown over earlier losses
		// once kept a discovery registration away for longer than TTL + 5 s
		// in the fault suite). Only failures to create a session, and
		// sessions lost at once, make it grow.
		if time.Since(started) > s.TTL()/3 {
			b.Reset()
		}
		if !pause() {
			return ctx.Err()
		}
		sup.Restarts.Add(ctx, 1)
	}
}

func runSupervised(ctx context.Context, s *Session, fn func(context.Context, *Session) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-s.Done():
			cancel(s.Err())
		case <-fctx.Done():
		}
	}()
	err := fn(fctx, s)
	cancel(nil)
	<-watcherDone
	return err
}
