package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/queue"
)

// outcome is what a client knows about an operation's effect.
type outcome int

const (
	ok      outcome = iota // it took effect (or, for a read or a wait, it answered)
	failed                 // it certainly changed nothing (a compare failed, it was refused)
	unknown                // no answer: it may or may not have taken effect
)

func (o outcome) String() string {
	return [...]string{"ok", "failed", "unknown"}[o]
}

// op is one recorded operation of one client process.
type op struct {
	id         int
	proc       string
	recipe     string
	kind       string
	start, end time.Time
	out        outcome
	rev        int64 // revision it landed at (ok writes), 0 otherwise
	token      int64 // fencing token it used or got
	lease      int64 // the session's lease, where it matters
	note       string
	// valid is, for a lost hold, until when its lease was acknowledged
	// (the last acknowledged keepalive's send time plus the TTL).
	valid time.Time
	// stale marks an operation a process made with the handle it kept
	// through a stall past its lease: it must not take effect.
	stale bool
}

func (o op) String() string {
	s := fmt.Sprintf("#%d %s %s/%s %s rev=%d token=%d [%s +%v]",
		o.id, o.proc, o.recipe, o.kind, o.out, o.rev, o.token,
		o.start.Format("15:04:05.000"), o.end.Sub(o.start).Round(time.Millisecond))
	if o.stale {
		s += " STALE-HANDLE"
	}
	if o.note != "" {
		s += " " + o.note
	}
	return s
}

// history records every operation of a run. It is safe for concurrent use.
type history struct {
	mu  sync.Mutex
	ops []op
}

// add records o (whose start the caller set) as ended now, and returns it.
func (h *history) add(o op) op {
	o.end = time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	o.id = len(h.ops)
	h.ops = append(h.ops, o)
	return o
}

func (h *history) all() []op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

func (h *history) byRecipe(recipe string) []op {
	var out []op
	for _, o := range h.all() {
		if o.recipe == recipe {
			out = append(out, o)
		}
	}
	return out
}

// classify says what an error from a write means for its effect.
func classify(err error) outcome {
	switch {
	case err == nil:
		return ok
	case errors.Is(err, concurrency.ErrNotHeld), errors.Is(err, queue.ErrClaimLost):
		return failed
	default:
		return unknown
	}
}

// violation is a broken invariant, with the operations that show it.
type violation struct {
	recipe string
	msg    string
	ops    []op
}

func (v violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s", v.recipe, v.msg)
	for _, o := range v.ops {
		fmt.Fprintf(&b, "\n\t\t%s", o)
	}
	return b.String()
}

// sleepCtx waits d or until ctx ends; it paces workers and fault schedules,
// it never waits for a condition.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pollUntil calls cond every 20ms until it is true (true) or d passes or ctx
// ends (false).
func pollUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// opLog is a slog.Handler that records a process's library warnings (a
// session counting itself lost, say) in the history as "log" operations,
// so a violation can be shown beside what the library saw.
type opLog struct {
	hist   *history
	proc   string
	recipe string
	attrs  []slog.Attr
}

func newOpLog(e *env, p *proc) *slog.Logger {
	return slog.New(&opLog{hist: e.hist, proc: p.name, recipe: p.recipe})
}

func (h *opLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *opLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
	h.hist.add(op{proc: h.proc, recipe: h.recipe, kind: "log", start: r.Time, out: ok, note: b.String()})
	return nil
}

func (h *opLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &opLog{hist: h.hist, proc: h.proc, recipe: h.recipe, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *opLog) WithGroup(string) slog.Handler { return h }
