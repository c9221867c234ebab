package faults

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/lock"
)

const (
	ckLockName   = "ck"
	ckLockPrefix = "ck/.lock/"
	ckTask       = "ckt"
)

// ckWL: processes take a task in turn (a lock fences it), load its
// checkpoint and save steps n+1, n+2, ... under the lock's Guard.
type ckWL struct {
	procs []*proc
	prog  atomic.Int64
}

func (w *ckWL) name() string { return "checkpoint" }

func (w *ckWL) setup(e *env) {
	for i := range 2 {
		w.procs = append(w.procs, e.newProc(w.name(), fmt.Sprintf("ckpt%d", i)))
	}
}

func (w *ckWL) progress() int64 { return w.prog.Load() }

func (w *ckWL) drain(context.Context, *env) {}

func (w *ckWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	for _, p := range w.procs {
		wg.Go(func() { w.worker(ctx, e, p) })
	}
}

func (w *ckWL) worker(ctx context.Context, e *env, p *proc) {
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		s, err := newSession(ctx, e, p)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		m, err := lock.NewMutex(s, ckLockName, lock.WithValue(p.name))
		for j := 0; err == nil && j < 100000 && ctx.Err() == nil && s.Err() == nil; j++ {
			w.hold(ctx, e, p, m)
		}
		closeSession(s)
	}
}

func parseStep(data []byte) int64 {
	n, _, _ := strings.Cut(string(data), " ")
	v, _ := strconv.ParseInt(n, 10, 64)
	return v
}

func (w *ckWL) hold(ctx context.Context, e *env, p *proc, m *lock.Mutex) {
	lctx, cancel := context.WithTimeout(ctx, scaled(waitTimeout))
	err := m.Lock(lctx)
	cancel()
	if err != nil {
		// Some errors come back at once (a pending Unlock): do not spin.
		sleepCtx(ctx, 20*time.Millisecond)
		return
	}
	tok, guard := int64(m.Token()), m.Guard()
	defer func() {
		uctx, cancel := opCtx(ctx)
		_ = m.Unlock(uctx)
		cancel()
	}()
	start := time.Now()
	octx, cancel := opCtx(ctx)
	saver, prog, err := checkpoint.Open(octx, p.client, ckTask, guard)
	cancel()
	if err != nil {
		return
	}
	n := parseStep(prog.Data)
	e.hist.add(op{proc: p.name, recipe: w.name(), kind: "load", start: start, out: ok, token: tok, rev: prog.Revision, note: strconv.FormatInt(n, 10)})
	p.holding.Store(true)
	defer p.holding.Store(false)
	for range 3 {
		stale := p.park(ctx)
		start := time.Now()
		octx, cancel := opCtx(ctx)
		pr, err := saver.Save(octx, fmt.Appendf(nil, "%d %d", n+1, tok))
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "save", start: start, out: classify(err), token: tok, stale: stale, note: strconv.FormatInt(n+1, 10)}
		if err == nil {
			o.rev = pr.Revision
			w.prog.Add(1)
		} else {
			o.note += " " + err.Error()
		}
		e.hist.add(o)
		if err != nil || stale {
			return
		}
		n++
		sleepCtx(ctx, 10*time.Millisecond)
	}
}

func (w *ckWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	ls := lives(c.events, ckLockPrefix)
	at := opsAt(c.ops)
	// From etcd's record: each save landed while its saver held the task,
	// and the steps go 1, 2, 3, ... (never back, never repeated).
	var last int64
	for _, e := range puts(c.events, checkpoint.Key(ckTask)) {
		ns, ts, _ := strings.Cut(e.value, " ")
		n, _ := strconv.ParseInt(ns, 10, 64)
		tok, _ := strconv.ParseInt(ts, 10, 64)
		if !holds(ls, e.rev-1, 1, tok) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("save of step %d by token %d landed at rev %d, when the saver did not hold the task (%v)",
				n, tok, e.rev, firstAt(ls, e.rev-1, 1)), append(withOp(at, e.rev), rivals(c.ops, firstAt(ls, e.rev-1, 1), tok)...)})
		}
		if n != last+1 {
			vs = append(vs, violation{w.name(), fmt.Sprintf("progress went %d -> %d at rev %d", last, n, e.rev), withOp(at, e.rev)})
		}
		last = n
	}
	// From the clients: a load never returns less than a save that had
	// been acknowledged before the load began.
	for _, l := range c.ops {
		if l.kind != "load" {
			continue
		}
		loaded, _ := strconv.ParseInt(l.note, 10, 64)
		for _, s := range c.ops {
			if s.kind == "save" && s.out == ok && s.end.Before(l.start) {
				saved, _ := strconv.ParseInt(strings.Fields(s.note)[0], 10, 64)
				if saved > loaded {
					vs = append(vs, violation{w.name(), fmt.Sprintf("load returned step %d after step %d had been saved", loaded, saved), []op{s, l}})
					break
				}
			}
		}
	}
	n := countOps(c.ops, "save", ok)
	vs = append(vs, tooFew(w.name(), "saves", n)...)
	stats := fmt.Sprintf("takeovers=%d saves ok=%d unknown=%d failed=%d, final step %d; stale-owner saves tried=%d landed=%d (each checked against the record)",
		countOps(c.ops, "load", ok), n, countOps(c.ops, "save", unknown), countOps(c.ops, "save", failed), last, countStale(c.ops, "save"), staleLanded(c.ops, "save"))
	return stats, vs
}
