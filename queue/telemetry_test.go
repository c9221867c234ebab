package queue_test

import (
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
	"github.com/concordkit/concord/queue"
)

func wantMetric(t *testing.T, r *telemetrytest.Reader, v float64, name string, attrs ...string) {
	t.Helper()
	if got := r.Get(name, attrs...); got.Value != v {
		t.Fatalf("%s%v = %v, want %v", name, attrs, got.Value, v)
	}
}

// An item nacked past its deliveries counts a dead letter; its deliveries,
// the redelivery, the nack and a later ack are counted along the way.
func TestMetricsQueueFlow(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	q := newQueue(t, srv.Client, queue.WithMaxDeliveries(2), queue.WithMeterProvider(r.Provider))
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(ctx) }()
	cons := q.Consumer(s)

	enqueue(t, q, "poison")
	for range 2 {
		c, err := cons.Claim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Nack(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	wantMetric(t, r, 0, "concord.queue.dead_lettered")
	enqueue(t, q, "good")
	c, err := cons.Claim(ctx) // the poison item goes to the dead letters on the way
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Payload()) != "good" {
		t.Fatalf("claimed %q, want the good item", c.Payload())
	}
	wantMetric(t, r, 1, "concord.queue.dead_lettered")
	if err := c.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	wantMetric(t, r, 2, "concord.queue.enqueued")
	wantMetric(t, r, 3, "concord.queue.delivered")
	wantMetric(t, r, 1, "concord.queue.redelivered")
	wantMetric(t, r, 2, "concord.queue.nacked")
	wantMetric(t, r, 1, "concord.queue.acked")
	if p := r.Get("concord.queue.delivery.delay"); p.Count != 3 || p.Value <= 0 {
		t.Fatalf("delivery delay: %d recorded, sum %v", p.Count, p.Value)
	}
	if p := r.Get("concord.queue.claim.duration"); p.Count != 1 {
		t.Fatalf("claim-to-ack: %d recorded, want 1", p.Count)
	}
	if p := r.Get("concord.wait.duration", "recipe", "queue", "outcome", "acquired"); p.Count != 3 {
		t.Fatalf("claim waits: %d recorded, want 3", p.Count)
	}
}

// Acking a claim whose loss is being watched is not a loss: the claim's own
// transaction deletes its key, which the watch may see before Ack returns.
func TestMetricsAckIsNotALoss(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(5*time.Second), concurrency.WithMeterProvider(r.Provider))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(ctx) }()
	q := newQueue(t, srv.Client)
	const n = 20
	for range n {
		enqueue(t, q, "x")
	}
	for range n {
		c, err := q.Consumer(s).Claim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Done() // watch for loss, as a worker does
		if err := c.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantMetric(t, r, 0, "concord.hold.lost")
	wantMetric(t, r, 0, "concord.holders", "recipe", "queue")
	if p := r.Get("concord.hold.duration", "recipe", "queue"); p.Count != n {
		t.Fatalf("queue holds ended: %d, want %d", p.Count, n)
	}
}

// A consumer whose session has the name attribute puts the queue's name on
// its wait, hold and flow figures; Enqueue (no session) does not.
func TestMetricsQueueNameAttribute(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	q := newQueue(t, srv.Client, queue.WithMaxDeliveries(1), queue.WithMeterProvider(r.Provider))
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(5*time.Second), concurrency.WithNameAttribute())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(ctx) }()
	cons := q.Consumer(s)
	name := q.Name()
	enqueue(t, q, "one")
	enqueue(t, q, "two")
	c, err := cons.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	c, err = cons.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := cons.TryClaim(ctx); err == nil { // "two" goes to the dead letters
		t.Fatal("TryClaim found an item after the last was nacked past its deliveries")
	}
	wantMetric(t, r, 2, "concord.queue.delivered", "concord.name", name)
	for _, m := range []string{"concord.queue.acked", "concord.queue.nacked", "concord.queue.dead_lettered"} {
		wantMetric(t, r, 1, m, "concord.name", name)
	}
	if got := r.Get("concord.queue.delivery.delay", "concord.name", name); got.Count != 2 {
		t.Fatalf("delivery delay with the name: %d recorded, want 2", got.Count)
	}
	if got := r.Get("concord.wait.duration", "recipe", "queue", "outcome", "acquired", "concord.name", name); got.Count != 2 {
		t.Fatalf("claim waits with the name: %d recorded, want 2", got.Count)
	}
	if got := r.Get("concord.queue.enqueued"); got.Value != 2 {
		t.Fatalf("enqueued = %v, want 2", got.Value)
	}
	if got := r.Get("concord.queue.enqueued", "concord.name", name); got.Found {
		t.Fatalf("enqueued carries the name: %+v", got)
	}
}
