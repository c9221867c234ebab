package concurrency_test

import (
	"context"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
)

// Supervise counts the restart after a revoked lease and the pause before
// it; the session counts itself lost with reason=revoked.
func TestMetricsSupervise(t *testing.T) {
	srv := embedtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := telemetrytest.New(t)
	runs := 0
	err := concurrency.Supervise(ctx, srv.Client, func(ctx context.Context, s *concurrency.Session) error {
		runs++
		if runs == 2 {
			return nil
		}
		if _, err := srv.Client.Revoke(ctx, s.Lease()); err != nil {
			return err
		}
		<-ctx.Done() // the loss cancels it
		return ctx.Err()
	}, concurrency.WithTTL(5*time.Second), concurrency.WithMeterProvider(r.Provider))
	if err != nil || runs != 2 {
		t.Fatalf("Supervise = %v after %d runs, want nil after 2", err, runs)
	}
	if got := r.Get("concord.supervisor.restarts").Value; got != 1 {
		t.Fatalf("restarts = %v, want 1", got)
	}
	if got := r.Get("concord.supervisor.backoff"); got.Count != 1 || got.Value <= 0 {
		t.Fatalf("backoff: %d recorded, sum %v; want one pause", got.Count, got.Value)
	}
	if got := r.Get("concord.session.lost", "reason", "revoked").Value; got != 1 {
		t.Fatalf("sessions lost revoked = %v, want 1", got)
	}
	if got := r.Get("concord.session.active").Value; got != 0 {
		t.Fatalf("sessions active = %v after Supervise returned", got)
	}
}
