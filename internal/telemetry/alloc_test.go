package telemetry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/concordkit/concord/internal/telemetry"
)

// With no SDK installed (the global providers) and with explicit no-op
// providers, what the hot paths record allocates nothing.
func TestNoSDKAllocatesNothing(t *testing.T) {
	for name, set := range map[string]*telemetry.Set{
		"global": telemetry.For(nil, nil),
		"noop":   telemetry.For(noop.NewMeterProvider(), nil),
	} {
		ctx := context.Background()
		failed := errors.New("x")
		allocs := testing.AllocsPerRun(200, func() {
			_, op := set.Begin(ctx, telemetry.Of(telemetry.Lock), "concord.lock.Lock")
			op.Joined(3)
			op.End(nil, false, 42)
			_, op = set.Begin(ctx, telemetry.Of(telemetry.Semaphore), "concord.semaphore.TryAcquire")
			op.End(failed, true, 0)
			set.HoldStarted(telemetry.Of(telemetry.Lock))
			set.HoldEnded(telemetry.Of(telemetry.Lock), time.Millisecond, true, telemetry.Revoked)
			set.KeepaliveAcked(time.Millisecond, time.Second)
			set.Queue.Delivered.Add(ctx, 1, telemetry.Named("")...)
			set.Election.LeaderChanged(ctx, telemetry.SourceObserve, "")
			set.Semaphore.Limit.Record(ctx, 3, telemetry.NamedRec("")...)
			set.Pubsub.Lag.Record(ctx, 2)
		})
		if allocs != 0 {
			t.Errorf("%s providers: %v allocations per acquire/hold/keepalive, want 0", name, allocs)
		}
	}
}

// The outcome of an acquire is told from its error.
func TestOutcomeOf(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err  error
		want telemetry.Outcome
	}{
		{nil, telemetry.Acquired},
		{ctx.Err(), telemetry.Cancelled},
		{context.DeadlineExceeded, telemetry.Cancelled},
		{errors.New("other"), telemetry.Failed},
	} {
		if got := telemetry.OutcomeOf(tc.err); got != tc.want {
			t.Errorf("OutcomeOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
