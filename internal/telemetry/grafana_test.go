package telemetry_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/concordkit/concord/internal/telemetry"
)

// exportedNames records through every instrument and returns the metric
// names the Prometheus exporter serves, as a scrape shows them.
func exportedNames(t *testing.T) map[string]bool {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	set := telemetry.For(mp, nil)
	ctx := context.Background()
	set.SessionStarted()
	set.SessionEnded(true, telemetry.Revoked)
	set.KeepaliveAcked(time.Millisecond, time.Second)
	_, op := set.Begin(ctx, telemetry.Of(telemetry.Lock), "x")
	op.Joined(1)
	op.End(nil, false, 1)
	set.HoldStarted(telemetry.Of(telemetry.Lock))
	set.HoldEnded(telemetry.Of(telemetry.Lock), time.Second, true, telemetry.Revoked)
	q := set.Queue
	for _, c := range []metric.Int64Counter{q.Enqueued, q.Delivered, q.Acked, q.Nacked, q.Redelivered, q.DeadLettered, set.Election.TermsWon, set.Discovery.Reregistrations} {
		c.Add(ctx, 1)
	}
	q.DeliveryDelay.Record(ctx, 1)
	set.Supervisor.Restarts.Add(ctx, 1)
	set.Pubsub.Published.Add(ctx, 1)
	set.Pubsub.Delivered.Add(ctx, 1)
	set.Pubsub.Gaps.Add(ctx, 1)
	set.Pubsub.Lag.Record(ctx, 1)
	set.Election.LeaderChanged(ctx, telemetry.SourceObserve, "")
	set.HoldStarted(telemetry.Scope{Recipe: telemetry.Election, Name: "vote"}) // is leader
	set.Semaphore.Limit.Record(ctx, 3)
	set.Supervisor.Backoff.Record(ctx, 1)
	q.ClaimToAck.Record(ctx, 1)
	d := set.Discovery
	r, err := set.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(d.Registered, 1)
		o.ObserveInt64(d.Instances, 1)
		o.ObserveFloat64(d.Staleness, 1)
		o.ObserveInt64(d.ServingCache, 1)
		return nil
	}, d.Registered, d.Instances, d.Staleness, d.ServingCache)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Unregister() }()

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	names := map[string]bool{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		names[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
	}
	return names
}

// Every metric the Grafana dashboard queries is one concord exports, under
// the name the Prometheus exporter gives it; and the dashboard shows every
// metric family concord has.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	names := exportedNames(t)
	raw, err := os.ReadFile("../../docs/grafana/concord.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	ident := regexp.MustCompile(`concord_[a-z0-9_]+`)
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range ident.FindAllString(tg.Expr, -1) {
				queried[m] = true
				if !names[m] {
					t.Errorf("panel %q queries %s, which concord does not export", p.Title, m)
				}
			}
		}
	}
	if len(queried) == 0 {
		t.Fatal("the dashboard queries no concord metric")
	}
	// Every family (a histogram's series share its name) is on the board.
	for n := range names {
		if !strings.HasPrefix(n, "concord_") {
			continue
		}
		base := n
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suf)
		}
		shown := false
		for q := range queried {
			if strings.HasPrefix(q, base) {
				shown = true
			}
		}
		if !shown {
			t.Errorf("%s is exported but not on the dashboard", n)
		}
	}
}
