package concurrency_test

import (
	"context"
	"fmt"
	"log"
	"sort"
	"strings"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

// A session given a meter provider reports its metrics, and those of every
// recipe on it, there: here the SDK's manual reader shows one lock held.
// (Without the option they go to the global provider, which an application
// sets with otel.SetMeterProvider.)
func ExampleWithMeterProvider() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)

	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	m, err := lock.NewMutex(s, "reports")
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	defer m.Unlock(ctx)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, met := range sm.Metrics {
			if sum, ok := met.Data.(metricdata.Sum[int64]); ok && met.Name == "concord.holders" {
				for _, dp := range sum.DataPoints {
					recipe, _ := dp.Attributes.Value("recipe")
					fmt.Printf("%s{recipe=%s} %d\n", met.Name, recipe.AsString(), dp.Value)
				}
			}
		}
	}
	// Output:
	// concord.holders{recipe=lock} 1
}

// With WithNameAttribute, the metrics of the recipes built on the session
// carry each resource's name, so one lock's waits can be told from
// another's.
func ExampleWithNameAttribute() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)

	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithMeterProvider(mp), concurrency.WithNameAttribute())
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	for _, name := range []string{"reports", "billing"} {
		m, err := lock.NewMutex(s, name)
		if err != nil {
			log.Fatal(err)
		}
		if err := m.Lock(ctx); err != nil {
			log.Fatal(err)
		}
		defer m.Unlock(ctx)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, met := range sm.Metrics {
			if h, ok := met.Data.(metricdata.Histogram[float64]); ok && met.Name == "concord.wait.duration" {
				for _, dp := range h.DataPoints {
					name, _ := dp.Attributes.Value("concord.name")
					outcome, _ := dp.Attributes.Value("outcome")
					lines = append(lines, fmt.Sprintf("%s{concord.name=%s, outcome=%s} count %d", met.Name, name.AsString(), outcome.AsString(), dp.Count))
				}
			}
		}
	}
	sort.Strings(lines)
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// concord.wait.duration{concord.name=billing, outcome=acquired} count 1
	// concord.wait.duration{concord.name=reports, outcome=acquired} count 1
}
