// Package telemetry holds concord's OpenTelemetry instruments: one Set per
// (meter provider, tracer provider) pair, cached, with every attribute set
// the hot paths use built once, so that recording with the no-op providers
// (the global ones until an application installs an SDK) allocates nothing.
package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every concord instrument.
const ScopeName = "github.com/concordkit/concord"

// Recipe is the recipe a measurement is about (attribute "recipe").
type Recipe uint8

// The recipes.
const (
	Lock Recipe = iota
	RWLock
	Election
	Semaphore
	Queue
	Checkpoint
	Barrier
	numRecipes
)

var recipeNames = [numRecipes]string{"lock", "rwlock", "election", "semaphore", "queue", "checkpoint", "barrier"}

func (r Recipe) String() string { return recipeNames[r] }

// NameKey is the attribute that carries a resource's name (a lock's, an
// election's, a semaphore's, a queue's), present only when the session was
// made with concurrency.WithNameAttribute: names can be unbounded.
const NameKey = "concord.name"

// Scope is what a measurement is about: a recipe and, when the user opted in
// to the name attribute, the resource's name ("" otherwise, and then the
// precomputed attribute sets are used and nothing is allocated).
type Scope struct {
	Recipe Recipe
	Name   string
}

// Of is the scope of recipe r without a name.
func Of(r Recipe) Scope { return Scope{Recipe: r} }

// Outcome is how a blocking acquire ended (attribute "outcome").
type Outcome uint8

// The outcomes.
const (
	Acquired Outcome = iota
	Cancelled
	SessionLost
	TryFailed
	Failed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"acquired", "cancelled", "session_lost", "try_failed", "error"}

func (o Outcome) String() string { return outcomeNames[o] }

// Reason is why a session or hold was lost (attribute "reason").
type Reason uint8

// The reasons.
const (
	Expired       Reason = iota // the server expired the lease
	RenewDeadline               // no keepalive acknowledged in time: counted lost before the server could expire it
	Revoked                     // the lease was revoked while it still had time to live
	Deleted                     // the held key was deleted by someone else
	numReasons
)

var reasonNames = [numReasons]string{"expired", "renew_deadline", "revoked", "deleted"}

func (r Reason) String() string { return reasonNames[r] }

// Set is the instruments of one provider pair. Its methods are safe for
// concurrent use and allocate nothing with the no-op providers.
type Set struct {
	Tracer trace.Tracer
	Meter  metric.Meter
	tp     trace.TracerProvider

	sessionsActive metric.Int64UpDownCounter
	sessionsLost   metric.Int64Counter
	keepaliveRTT   metric.Float64Histogram
	renewMargin    metric.Float64Histogram

	waitDuration metric.Float64Histogram
	waiters      metric.Int64UpDownCounter
	holders      metric.Int64UpDownCounter
	holdDuration metric.Float64Histogram
	holdsLost    metric.Int64Counter

	// Precomputed measurement options.
	byReason        [numReasons][]metric.AddOption
	byRecipe        [numRecipes][]metric.AddOption
	byRecipeRec     [numRecipes][]metric.RecordOption
	byRecipeOutcome [numRecipes][numOutcomes][]metric.RecordOption
	byRecipeReason  [numRecipes][numReasons][]metric.AddOption

	Queue      QueueInstruments
	Discovery  DiscoveryInstruments
	Election   ElectionInstruments
	Semaphore  SemaphoreInstruments
	Supervisor SupervisorInstruments
	Pubsub     PubsubInstruments
}

type key struct {
	mp metric.MeterProvider
	tp trace.TracerProvider
}

var cache sync.Map // key -> *Set

// For returns the Set of mp and tp (nil means the global provider), created
// once per pair.
func For(mp metric.MeterProvider, tp trace.TracerProvider) *Set {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	k := key{mp, tp}
	if s, ok := cache.Load(k); ok {
		return s.(*Set)
	}
	s, _ := cache.LoadOrStore(k, newSet(mp, tp))
	return s.(*Set)
}

func newSet(mp metric.MeterProvider, tp trace.TracerProvider) *Set {
	m := mp.Meter(ScopeName)
	s := &Set{Tracer: tp.Tracer(ScopeName), Meter: m, tp: tp}
	s.sessionsActive, _ = m.Int64UpDownCounter("concord.session.active", metric.WithUnit("{session}"),
		metric.WithDescription("Sessions this process keeps alive."))
	s.sessionsLost, _ = m.Int64Counter("concord.session.lost", metric.WithUnit("{session}"),
		metric.WithDescription("Sessions lost, by reason (expired, renew_deadline, revoked)."))
	s.keepaliveRTT, _ = m.Float64Histogram("concord.session.keepalive.duration", metric.WithUnit("s"),
		metric.WithDescription("Round trip of each acknowledged keepalive."))
	s.renewMargin, _ = m.Float64Histogram("concord.session.renew_margin", metric.WithUnit("s"),
		metric.WithDescription("Time left before the renew deadline when a keepalive is acknowledged."))
	s.waitDuration, _ = m.Float64Histogram("concord.wait.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to acquire a held resource, by recipe and outcome."))
	s.waiters, _ = m.Int64UpDownCounter("concord.waiters", metric.WithUnit("{waiter}"),
		metric.WithDescription("Callers of this process waiting in a line."))
	s.holders, _ = m.Int64UpDownCounter("concord.holders", metric.WithUnit("{holder}"),
		metric.WithDescription("Held resources this process has."))
	s.holdDuration, _ = m.Float64Histogram("concord.hold.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a resource was held, until release or loss."))
	s.holdsLost, _ = m.Int64Counter("concord.hold.lost", metric.WithUnit("{hold}"),
		metric.WithDescription("Held resources lost, by recipe and reason."))
	for r := range numReasons {
		s.byReason[r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r.String())))}
	}
	for rc := range numRecipes {
		rs := attribute.NewSet(attribute.String("recipe", rc.String()))
		s.byRecipe[rc] = []metric.AddOption{metric.WithAttributeSet(rs)}
		s.byRecipeRec[rc] = []metric.RecordOption{metric.WithAttributeSet(rs)}
		for o := range numOutcomes {
			s.byRecipeOutcome[rc][o] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
				attribute.String("recipe", rc.String()), attribute.String("outcome", o.String())))}
		}
		for r := range numReasons {
			s.byRecipeReason[rc][r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
				attribute.String("recipe", rc.String()), attribute.String("reason", r.String())))}
		}
	}
	s.Queue.init(m)
	s.Discovery.init(m)
	s.Election.init(m)
	s.Semaphore.init(m)
	s.Supervisor.init(m)
	s.Pubsub.init(m)
	return s
}

var bg = context.Background()

// SessionStarted counts a new session.
func (s *Set) SessionStarted() { s.sessionsActive.Add(bg, 1) }

// SessionEnded counts a session's end; lost says whether it was lost, and why.
func (s *Set) SessionEnded(lost bool, why Reason) {
	s.sessionsActive.Add(bg, -1)
	if lost {
		s.sessionsLost.Add(bg, 1, s.byReason[why]...)
	}
}

// KeepaliveAcked records one acknowledged keepalive: its round trip and the
// time that was left before the renew deadline.
func (s *Set) KeepaliveAcked(rtt, left time.Duration) {
	s.keepaliveRTT.Record(bg, rtt.Seconds())
	s.renewMargin.Record(bg, left.Seconds())
}

// HoldStarted counts a new held resource. A named election's hold sets its
// "is leader" gauge to 1.
func (s *Set) HoldStarted(sc Scope) {
	if sc.Name == "" {
		s.holders.Add(bg, 1, s.byRecipe[sc.Recipe]...)
		return
	}
	s.holders.Add(bg, 1, named(sc))
	if sc.Recipe == Election {
		s.Election.Leader.Record(bg, 1, nameOnly(sc.Name))
	}
}

// HoldEnded counts the end of a held resource that was held for d; lost
// says whether it was lost, and why. A named election's hold sets its "is
// leader" gauge to 0.
func (s *Set) HoldEnded(sc Scope, d time.Duration, lost bool, why Reason) {
	if sc.Name == "" {
		s.holders.Add(bg, -1, s.byRecipe[sc.Recipe]...)
		s.holdDuration.Record(bg, d.Seconds(), s.byRecipeRec[sc.Recipe]...)
		if lost {
			s.holdsLost.Add(bg, 1, s.byRecipeReason[sc.Recipe][why]...)
		}
		return
	}
	s.holders.Add(bg, -1, named(sc))
	s.holdDuration.Record(bg, d.Seconds(), named(sc))
	if lost {
		s.holdsLost.Add(bg, 1, named(sc, attribute.String("reason", why.String())))
	}
	if sc.Recipe == Election {
		s.Election.Leader.Record(bg, 0, nameOnly(sc.Name))
	}
}

// named is the attributes of a named scope (recipe and name) and extra:
// built on each call, which allocates (only users who opted in pay it).
func named(sc Scope, extra ...attribute.KeyValue) metric.MeasurementOption {
	kv := append([]attribute.KeyValue{attribute.String("recipe", sc.Recipe.String()), attribute.String(NameKey, sc.Name)}, extra...)
	return metric.WithAttributeSet(attribute.NewSet(kv...))
}

// NamedRec is Named for histograms and gauges.
func NamedRec(name string) []metric.RecordOption {
	if name == "" {
		return nil
	}
	return []metric.RecordOption{nameOnly(name)}
}

// NameOpt is the name attribute alone, or no attribute for "".
func NameOpt(name string) metric.MeasurementOption { return nameOnly(name) }

// nameOnly is the name attribute alone, or no attribute for "".
func nameOnly(name string) metric.MeasurementOption {
	if name == "" {
		return metric.WithAttributeSet(attribute.NewSet())
	}
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(NameKey, name)))
}

// Named is the measurement options of a recipe figure about the resource
// named name: its name attribute, or none when name is "" (then nothing is
// allocated).
func Named(name string) []metric.AddOption {
	if name == "" {
		return nil
	}
	return []metric.AddOption{nameOnly(name)}
}
