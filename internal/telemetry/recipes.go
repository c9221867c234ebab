package telemetry

import "go.opentelemetry.io/otel/metric"

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
}

func (p *PubsubInstruments) init(m metric.Meter) {
	p.Published, _ = m.Int64Counter("concord.pubsub.published", metric.WithUnit("{message}"),
		metric.WithDescription("Messages this process published."))
	p.Delivered, _ = m.Int64Counter("concord.pubsub.delivered", metric.WithUnit("{message}"),
		metric.WithDescription("Messages delivered to this process's subscriptions."))
	p.Gaps, _ = m.Int64Counter("concord.pubsub.gaps", metric.WithUnit("{gap}"),
		metric.WithDescription("Gaps signalled to subscriptions: messages retention removed before they were read."))
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

// ElectionInstruments are the election's own figures (time as leader and
// "is leader" are the election's hold duration and holders).
type ElectionInstruments struct {
	TermsWon metric.Int64Counter
}

func (e *ElectionInstruments) init(m metric.Meter) {
	e.TermsWon, _ = m.Int64Counter("concord.election.terms_won", metric.WithUnit("{term}"),
		metric.WithDescription("Terms this process won."))
}
