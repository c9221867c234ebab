package pubsub_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
	"github.com/concordkit/concord/pubsub"
)

// A subscriber that starts before what retention kept is told of one gap
// and gets the kept messages; published, delivered and gaps are counted.
func TestMetricsPubsub(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	r := telemetrytest.New(t)
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(3), pubsub.WithMeterProvider(r.Provider))
	for i := range 10 {
		publish(t, ps, "news", fmt.Sprint(i))
	}
	if _, err := ps.Trim(testCtx(t), "news"); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, ps, "news", pubsub.After(0))
	if ev := next(t, sub); ev.Gap == nil {
		t.Fatalf("first event %+v, want a gap", ev)
	}
	for range 3 {
		if ev := next(t, sub); ev.Gap != nil {
			t.Fatalf("event %+v, want a message", ev)
		}
	}
	// Counted once the subscriber's Send returned, just after the receive.
	deadline := time.Now().Add(10 * time.Second)
	for name, want := range map[string]float64{"concord.pubsub.published": 10, "concord.pubsub.delivered": 3, "concord.pubsub.gaps": 1} {
		for got := r.Get(name).Value; got != want; got = r.Get(name).Value {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v, want %v", name, got, want)
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	}
}
