package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
)

// DefaultMaxDeliveries is how many times an item is delivered before it
// moves to the dead letters, unless WithMaxDeliveries says otherwise.
const DefaultMaxDeliveries = 10

// Option configures a Queue.
type Option interface{ apply(*Queue) }

type optionFunc func(*Queue)

func (f optionFunc) apply(q *Queue) { f(q) }

// WithMaxDeliveries sets how many deliveries an item gets before it moves
// to the dead letters (0: never).
func WithMaxDeliveries(n int) Option { return optionFunc(func(q *Queue) { q.maxDeliveries = n }) }

// WithMeterProvider records the queue's figures (enqueued, delivered,
// acked, nacked, redelivered, dead-lettered, delivery and claim times) with
// mp. Default: the consumer's session's provider for what consumers do, the
// global provider for Enqueue.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(q *Queue) { q.mp = mp })
}

// WithTracerProvider starts the spans of Claim with tp. Default: the
// consumer's session's provider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(q *Queue) { q.tp = tp })
}

// WithLogger logs what the queue cannot report to a caller (a background
// undo that failed, an undecodable item). Default: silent.
func WithLogger(lg *slog.Logger) Option { return optionFunc(func(q *Queue) { q.log = lg }) }

// Queue is a durable work queue in etcd: FIFO within a priority, higher
// priorities first, optional delays, and at-least-once delivery to
// consumers that claim items under their session's lease. It is safe for
// concurrent use.
type Queue struct {
	client        *clientv3.Client
	name          string
	pfx           string
	maxDeliveries int
	log           *slog.Logger
	mp            metric.MeterProvider
	tp            trace.TracerProvider
	tel           *telemetry.Set // of mp and tp; see telFor

	mu        sync.Mutex
	lastOrder int64
	view      *view         // read by the last Ack or Nack; see claimReady
	contended atomic.Int32  // claims left to spread out; see claimReady
	lastSweep atomic.Int64  // when this value last looked for orphans; see sweepDue
	sweepSeen atomic.Int64  // the sweep key's mod revision last seen, -1 none; see requeueOrphans
	win       window        // where the head of the queue is; see readyOp
	lastSlow  atomic.Int64  // when a look was last whole, as far as this value knows; see requeueOrphans
	slowEvery time.Duration // how often a look is
	noted     sync.Map      // lease → Done of the session whose claims this value marked; see note
}

// slowLookInterval is how often the looks for orphans of a queue's
// consumers are whole (see requeueOrphans): they then also read every
// claimed item and claim, and below the queue's front.
const slowLookInterval = 30 * time.Second

// New returns the queue name.
func New(client *clientv3.Client, name string, opts ...Option) (*Queue, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	q := &Queue{client: client, name: name, pfx: name + "/.q/", maxDeliveries: DefaultMaxDeliveries, log: slog.New(slog.DiscardHandler)}
	q.sweepSeen.Store(-1)
	q.slowEvery = slowLookInterval
	for _, o := range opts {
		o.apply(q)
	}
	q.tel = telemetry.For(q.mp, q.tp)
	if q.maxDeliveries < 0 {
		return nil, fmt.Errorf("%w: max deliveries %d", ErrInvalidOption, q.maxDeliveries)
	}
	return q, nil
}

// Name is the queue's name.
func (q *Queue) Name() string { return q.name }

// EnqueueOption configures one Enqueue.
type EnqueueOption interface{ applyEnqueue(*enqueueConfig) }

type enqueueConfig struct {
	priority int
	delay    time.Duration
}

type enqueueOptionFunc func(*enqueueConfig)

func (f enqueueOptionFunc) applyEnqueue(c *enqueueConfig) { f(c) }

// WithPriority sets the item's priority, 0 (default) to 255; higher first.
func WithPriority(p int) EnqueueOption {
	return enqueueOptionFunc(func(c *enqueueConfig) { c.priority = p })
}

// WithDelay makes the item claimable only after d.
func WithDelay(d time.Duration) EnqueueOption {
	return enqueueOptionFunc(func(c *enqueueConfig) { c.delay = d })
}

// order returns a per-process strictly increasing timestamp, so one
// producer's items keep their enqueue order even if the wall clock steps
// back.
func (q *Queue) order() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now().UnixNano()
	if now <= q.lastOrder {
		now = q.lastOrder + 1
	}
	q.lastOrder = now
	return now
}

// Enqueue stores payload and returns the item's id. Once it returns nil the
// item is durable in etcd and will be delivered at least once (or moved to
// the dead letters after its deliveries run out).
func (q *Queue) Enqueue(ctx context.Context, payload []byte, opts ...EnqueueOption) (string, error) {
	var c enqueueConfig
	for _, o := range opts {
		o.applyEnqueue(&c)
	}
	if c.priority < 0 || c.priority > 255 {
		return "", fmt.Errorf("%w: %d", ErrInvalidPriority, c.priority)
	}
	if c.delay < 0 {
		return "", fmt.Errorf("%w: negative delay %v", ErrInvalidOption, c.delay)
	}
	now := q.order()
	m := meta{ID: newID(), Priority: c.priority, Order: now, Enqueued: now}
	if c.delay > 0 {
		m.Due = now + int64(c.delay)
	}
	v := encode(m, payload)
	if len(v) > names.MaxValueBytes {
		return "", fmt.Errorf("%w: %d bytes with metadata, at most %d", ErrTooLarge, len(v), names.MaxValueBytes)
	}
	if _, err := q.client.Txn(ctx).Then(q.putItemOps(q.placeKey(m), v)...).Commit(); err != nil {
		return "", err
	}
	q.tel.Queue.Enqueued.Add(ctx, 1)
	return m.ID, nil
}

// scopeFor is the telemetry scope of what a consumer on s does: the
// queue's name is on it if s was made with concurrency.WithNameAttribute.
func (q *Queue) scopeFor(s *concurrency.Session) telemetry.Scope {
	return (*session.Session)(s).Scope(telemetry.Queue, q.name)
}

// telFor is the instruments for what a consumer on s does: the queue's if
// it was given a provider, else the session's.
func (q *Queue) telFor(s *concurrency.Session) *telemetry.Set {
	if q.mp != nil || q.tp != nil {
		return q.tel
	}
	return (*session.Session)(s).Telemetry()
}
