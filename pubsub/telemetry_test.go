package pubsub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

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

// A subscription that catches up on five retained messages records each
// one's lag behind the revision the catch-up read at (the span says which),
// in a concord.pubsub.CatchUp span that is a child of the caller's span;
// a message then followed live is 0 behind.
func TestPubsubLagAndCatchUpSpan(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	r := telemetrytest.New(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(100), pubsub.WithMeterProvider(r.Provider), pubsub.WithTracerProvider(tp))
	revs := publish(t, ps, "news", "a", "b", "c", "d", "e")

	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	pctx, parent := tp.Tracer("test").Start(ctx, "caller")
	sub, err := ps.Subscribe(pctx, "news", pubsub.Oldest)
	if err != nil {
		t.Fatal(err)
	}
	parent.End()
	defer func() {
		cancel()
		for range sub.C() {
		}
	}()
	for i := range revs {
		if ev := next(t, sub); ev.Revision != revs[i] {
			t.Fatalf("event %d: %+v, want revision %d", i, ev, revs[i])
		}
	}
	var head int64
	deadline := time.Now().Add(10 * time.Second)
	for head == 0 {
		for _, sp := range rec.Ended() {
			if sp.Name() != "concord.pubsub.CatchUp" {
				continue
			}
			if sp.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Fatalf("catch-up span's parent %v, want the caller's %v", sp.Parent().SpanID(), parent.SpanContext().SpanID())
			}
			attrs := attribute.NewSet(sp.Attributes()...)
			if v, _ := attrs.Value("concord.outcome"); v.AsString() != "ok" {
				t.Fatalf("catch-up outcome %q", v.Emit())
			}
			if v, _ := attrs.Value("concord.delivered"); v.AsInt64() != 5 {
				t.Fatalf("catch-up delivered %v, want 5", v.Emit())
			}
			v, _ := attrs.Value("concord.revision")
			head = v.AsInt64()
		}
		if head == 0 && time.Now().After(deadline) {
			t.Fatal("no concord.pubsub.CatchUp span ended within 10s")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if head < revs[4] {
		t.Fatalf("catch-up read at %d, before the last message %d", head, revs[4])
	}
	var want int64
	for _, rev := range revs {
		want += head - rev
	}
	lag := func() telemetrytest.Point { return r.Get("concord.pubsub.lag") }
	for got := lag(); got.Count != 5; got = lag() {
		if time.Now().After(deadline) {
			t.Fatalf("lag recorded %d times, want 5", got.Count)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if got := lag(); got.Value != float64(want) || want == 0 {
		t.Fatalf("lag sum %v, want %d (read at %d, messages %v)", got.Value, want, head, revs)
	}

	live := publish(t, ps, "news", "f")
	if ev := next(t, sub); ev.Revision != live[0] {
		t.Fatalf("live event %+v, want revision %d", ev, live[0])
	}
	for got := lag(); got.Count != 6; got = lag() {
		if time.Now().After(deadline) {
			t.Fatalf("lag recorded %d times, want 6", got.Count)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if got := lag(); got.Value != float64(want) {
		t.Fatalf("lag sum %v after a live message, want %d unchanged (it was 0 behind)", got.Value, want)
	}
}
