package telemetry

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/concordkit/concord/internal/errs"
)

// initialTP is the global tracer provider before any application sets one:
// while it is still the global one, no span is started (starting one on it
// would allocate for nothing).
var initialTP = otel.GetTracerProvider()

// tracer returns the tracer to start spans with, or nil when spans would
// go nowhere.
func (s *Set) tracer() trace.Tracer {
	switch s.tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return nil
	}
	if s.tp == initialTP && otel.GetTracerProvider() == initialTP {
		return nil
	}
	return s.Tracer
}

// Op is one blocking acquire (Lock, Campaign, Acquire, Claim, ...): its
// wait time, its place among the waiters and its span. The zero Op (nil
// Set) records nothing.
type Op struct {
	s       *Set
	sc      Scope
	start   time.Time
	span    trace.Span
	waiting bool
}

// Begin starts an Op for scope sc; name is its span's name. It returns ctx
// with the span, if one was started.
func (s *Set) Begin(ctx context.Context, sc Scope, name string) (context.Context, Op) {
	op := Op{s: s, sc: sc, start: time.Now()}
	if t := s.tracer(); t != nil {
		ctx, op.span = t.Start(ctx, name, spanStart[sc.Recipe]...)
		if sc.Name != "" {
			op.span.SetAttributes(attribute.String(NameKey, sc.Name))
		}
	}
	return ctx, op
}

// Joined records how many were ahead when the caller joined the line; with
// any ahead, the caller counts as a waiter until End.
func (o *Op) Joined(ahead int) {
	if o.s == nil {
		return
	}
	if o.span != nil {
		o.span.SetAttributes(attribute.Int("concord.ahead", ahead))
	}
	if ahead > 0 && !o.waiting {
		o.waiting = true
		o.addWaiters(1)
	}
}

// End records the Op's outcome, from err (nil: acquired) unless try says
// the failure was a try that found the resource taken; token is the
// fencing token acquired (0 if none).
func (o *Op) End(err error, try bool, token int64) {
	if o.s == nil {
		return
	}
	out := OutcomeOf(err)
	if try && err != nil && out == Failed {
		out = TryFailed
	}
	if o.waiting {
		o.waiting = false
		o.addWaiters(-1)
	}
	if o.sc.Name == "" {
		o.s.waitDuration.Record(bg, time.Since(o.start).Seconds(), o.s.byRecipeOutcome[o.sc.Recipe][out]...)
	} else {
		o.s.waitDuration.Record(bg, time.Since(o.start).Seconds(), named(o.sc, attribute.String("outcome", out.String())))
	}
	if o.span != nil {
		if token != 0 {
			o.span.SetAttributes(attribute.String("concord.outcome", out.String()), attribute.Int64("concord.token", token))
		} else {
			o.span.SetAttributes(attribute.String("concord.outcome", out.String()))
		}
		if err != nil && out != TryFailed {
			o.span.SetStatus(codes.Error, err.Error())
		}
		o.span.End()
	}
	o.s = nil
}

func (o *Op) addWaiters(n int64) {
	if o.sc.Name == "" {
		o.s.waiters.Add(bg, n, o.s.byRecipe[o.sc.Recipe]...)
	} else {
		o.s.waiters.Add(bg, n, named(o.sc))
	}
}

// Span starts a span named name, a child of ctx's, for a blocking call that
// has no wait metrics (Register, a subscription's catch-up); it returns nil
// when spans would go nowhere. End it with EndSpan.
func (s *Set) Span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	t := s.tracer()
	if t == nil {
		return ctx, nil
	}
	return t.Start(ctx, name, trace.WithAttributes(attrs...))
}

// EndSpan ends span (nil: nothing) with the outcome of err ("ok", the
// outcome of a cancellation, or "error" with the error as its status) and
// attrs.
func EndSpan(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if span == nil {
		return
	}
	out := "ok"
	if err != nil {
		out = OutcomeOf(err).String()
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(append(attrs, attribute.String("concord.outcome", out))...)
	span.End()
}

// spanStart are the start options of each recipe's spans.
var spanStart = func() (o [numRecipes][]trace.SpanStartOption) {
	for r := range numRecipes {
		o[r] = []trace.SpanStartOption{trace.WithAttributes(attribute.String("concord.recipe", r.String()))}
	}
	return o
}()

// OutcomeOf classifies an acquire's error.
func OutcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return Acquired
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Cancelled
	case errors.Is(err, errs.LeaseExpired), errors.Is(err, errs.RenewDeadline), errors.Is(err, errs.SessionClosed):
		return SessionLost
	}
	return Failed
}
