package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// QueueInstruments are the queue's own figures.
type QueueInstruments struct {
	Enqueued      metric.Int64Counter
	Delivered     metric.Int64Counter
	Acked         metric.Int64Counter
	Nacked        metric.Int64Counter
	Redelivered   metric.Int64Counter
	DeadLettered  metric.Int64Counter
	DeliveryDelay metric.Float64Histogram // enqueue to claim
	ClaimToAck    metric.Float64Histogram
}

func (q *QueueInstruments) init(m metric.Meter) {
	c := func(name, desc string) metric.Int64Counter {
		i, _ := m.Int64Counter(name, metric.WithUnit("{item}"), metric.WithDescription(desc))
		return i
	}
	q.Enqueued = c("concord.queue.enqueued", "Items enqueued by this process.")
	q.Delivered = c("concord.queue.delivered", "Items claimed by this process's consumers.")
	q.Acked = c("concord.queue.acked", "Items acknowledged (done) by this process.")
	q.Nacked = c("concord.queue.nacked", "Items handed back for redelivery by this process.")
	q.Redelivered = c("concord.queue.redelivered", "Claims of items delivered before (a nack or a lost claim).")
	q.DeadLettered = c("concord.queue.dead_lettered", "Items moved to the dead-letter line after too many deliveries.")
	q.DeliveryDelay, _ = m.Float64Histogram("concord.queue.delivery.delay", metric.WithUnit("s"),
		metric.WithDescription("Time from enqueue to claim."))
	q.ClaimToAck, _ = m.Float64Histogram("concord.queue.claim.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from claim to ack."))
}

// DiscoveryInstruments are discovery's own figures. The watcher gauges are
// observed from callbacks each watcher registers on Meter.
type DiscoveryInstruments struct {
	Registered      metric.Int64ObservableGauge
	Reregistrations metric.Int64Counter
	Instances       metric.Int64ObservableGauge
	Staleness       metric.Float64ObservableGauge
	ServingCache    metric.Int64ObservableGauge
}

func (d *DiscoveryInstruments) init(m metric.Meter) {
	d.Registered, _ = m.Int64ObservableGauge("concord.discovery.registered", metric.WithUnit("{instance}"),
		metric.WithDescription("Instances this process has registered."))
	d.Reregistrations, _ = m.Int64Counter("concord.discovery.reregistrations", metric.WithUnit("{registration}"),
		metric.WithDescription("Registrations made again after their lease was lost."))
	d.Instances, _ = m.Int64ObservableGauge("concord.discovery.instances", metric.WithUnit("{instance}"),
		metric.WithDescription("Instances a watcher of this process sees."))
	d.Staleness, _ = m.Float64ObservableGauge("concord.discovery.staleness", metric.WithUnit("s"),
		metric.WithDescription("Seconds since a watcher last heard from etcd."))
	d.ServingCache, _ = m.Int64ObservableGauge("concord.discovery.serving_cache",
		metric.WithDescription("1 while a watcher serves its cache through an outage of etcd."))
}

// PubsubInstruments are pubsub's figures.
type PubsubInstruments struct {
	Published metric.Int64Counter
	Delivered metric.Int64Counter
	Gaps      metric.Int64Counter
	Lag       metric.Int64Histogram // revisions a delivered message is behind the latest one seen
}

func (p *PubsubInstruments) init(m metric.Meter) {
	p.Published, _ = m.Int64Counter("concord.pubsub.published", metric.WithUnit("{message}"),
		metric.WithDescription("Messages this process published."))
	p.Delivered, _ = m.Int64Counter("concord.pubsub.delivered", metric.WithUnit("{message}"),
		metric.WithDescription("Messages delivered to this process's subscriptions."))
	p.Gaps, _ = m.Int64Counter("concord.pubsub.gaps", metric.WithUnit("{gap}"),
		metric.WithDescription("Gaps signalled to subscriptions: messages retention removed before they were read."))
	p.Lag, _ = m.Int64Histogram("concord.pubsub.lag", metric.WithUnit("{revision}"),
		metric.WithDescription("At each delivery, how many revisions the message is behind the latest revision its subscription has seen from etcd."),
		metric.WithExplicitBucketBoundaries(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000))
}

// SupervisorInstruments are Supervise's figures.
type SupervisorInstruments struct {
	Restarts metric.Int64Counter
	Backoff  metric.Float64Histogram
}

func (s *SupervisorInstruments) init(m metric.Meter) {
	s.Restarts, _ = m.Int64Counter("concord.supervisor.restarts", metric.WithUnit("{restart}"),
		metric.WithDescription("Runs Supervise started again after their session was lost."))
	s.Backoff, _ = m.Float64Histogram("concord.supervisor.backoff", metric.WithUnit("s"),
		metric.WithDescription("Pauses Supervise made before a new session."))
}

// ElectionInstruments are the election's own figures. Time as leader is
// the election's hold duration; without the name attribute "is leader" is
// the election's holders (how many elections this process leads), and
// Leader, a gauge per named election, is recorded only with it.
type ElectionInstruments struct {
	TermsWon      metric.Int64Counter
	LeaderChanges metric.Int64Counter
	Leader        metric.Int64Gauge

	bySource [2][]metric.AddOption
}

// The sources of a leader change.
const (
	SourceObserve  = 0 // an Observe stream saw it
	SourceCampaign = 1 // this process won a campaign
)

var sourceNames = [2]string{"observe", "campaign"}

// LeaderChanged counts a new leader seen by source (SourceObserve or
// SourceCampaign) in the election named name ("" without the name
// attribute).
func (e *ElectionInstruments) LeaderChanged(ctx context.Context, source int, name string) {
	if name == "" {
		e.LeaderChanges.Add(ctx, 1, e.bySource[source]...)
		return
	}
	e.LeaderChanges.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(
		attribute.String("source", sourceNames[source]), attribute.String(NameKey, name))))
}

func (e *ElectionInstruments) init(m metric.Meter) {
	e.TermsWon, _ = m.Int64Counter("concord.election.terms_won", metric.WithUnit("{term}"),
		metric.WithDescription("Terms this process won."))
	e.LeaderChanges, _ = m.Int64Counter("concord.election.leader_changes", metric.WithUnit("{change}"),
		metric.WithDescription("New leaders this process saw: by its Observe streams (source=observe) and its own won campaigns (source=campaign)."))
	for i, n := range sourceNames {
		e.bySource[i] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("source", n)))}
	}
	e.Leader, _ = m.Int64Gauge("concord.election.leader", metric.WithUnit("{leader}"),
		metric.WithDescription("1 while this process leads the election named by concord.name, 0 while it campaigns or after (only with the name attribute)."))
}

// SemaphoreInstruments are the semaphore's own figures (permits in use and
// waiters are the semaphore's holders and waiters).
type SemaphoreInstruments struct {
	Limit metric.Int64Gauge
}

func (s *SemaphoreInstruments) init(m metric.Meter) {
	s.Limit, _ = m.Int64Gauge("concord.semaphore.limit", metric.WithUnit("{permit}"),
		metric.WithDescription("The stored limit a semaphore of this process last saw (per semaphore with the name attribute)."))
}
