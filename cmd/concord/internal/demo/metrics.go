package demo

import (
	"fmt"
	"io"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
)

// Metrics is what the demo's OpenTelemetry metrics recorded (the same
// instruments --metrics-addr serves), read with the SDK's manual reader.
type Metrics struct {
	Acquired     map[string]int           // recipe -> acquires that succeeded
	MeanWait     map[string]time.Duration // recipe -> mean wait of those
	HoldsLost    map[string]int           // reason -> holds lost
	SessionsLost map[string]int           // reason -> sessions lost
	TermsWon     int
}

var (
	// The recipes package rollout runs on: the coordinator's election,
	// the slots' semaphore, a lock per host's claim.
	tableRecipes = []string{"election", "semaphore", "lock"}
	tableReasons = []string{"revoked", "expired", "renew_deadline", "deleted"}
)

// metricsTable reads the figures out of rm and prints them as a short table.
func metricsTable(out io.Writer, rm metricdata.ResourceMetrics) Metrics {
	m := Metrics{Acquired: map[string]int{}, MeanWait: map[string]time.Duration{}, HoldsLost: map[string]int{},
		SessionsLost: map[string]int{}}
	fmt.Fprintf(out, "\nWhat concord's metrics recorded (concord.*, as --metrics-addr serves them):\n")
	fmt.Fprintf(out, "  %-10s %8s %10s %9s %10s\n", "recipe", "acquired", "mean wait", "cancelled", "mean hold")
	for _, r := range tableRecipes {
		w := telemetrytest.Find(rm, "concord.wait.duration", "recipe", r, "outcome", "acquired")
		c := telemetrytest.Find(rm, "concord.wait.duration", "recipe", r, "outcome", "cancelled")
		h := telemetrytest.Find(rm, "concord.hold.duration", "recipe", r)
		m.Acquired[r] = int(w.Count)
		m.MeanWait[r] = mean(w)
		fmt.Fprintf(out, "  %-10s %8d %10v %9d %10v\n", r, w.Count, m.MeanWait[r], c.Count, mean(h))
	}
	line := "  holds lost:"
	for _, why := range tableReasons {
		m.HoldsLost[why] = int(telemetrytest.Find(rm, "concord.hold.lost", "reason", why).Value)
		line += fmt.Sprintf(" %s %d", why, m.HoldsLost[why])
	}
	fmt.Fprintln(out, line)
	line = "  sessions lost:"
	for _, why := range tableReasons[:3] {
		m.SessionsLost[why] = int(telemetrytest.Find(rm, "concord.session.lost", "reason", why).Value)
		line += fmt.Sprintf(" %s %d", why, m.SessionsLost[why])
	}
	fmt.Fprintln(out, line)
	m.TermsWon = int(telemetrytest.Find(rm, "concord.election.terms_won").Value)
	fmt.Fprintf(out, "  election: terms won %d; discovery: re-registrations %d\n",
		m.TermsWon, int(telemetrytest.Find(rm, "concord.discovery.reregistrations").Value))
	return m
}

func mean(p telemetrytest.Point) time.Duration {
	if p.Count == 0 {
		return 0
	}
	return (time.Duration(p.Value / float64(p.Count) * float64(time.Second))).Round(time.Millisecond)
}
