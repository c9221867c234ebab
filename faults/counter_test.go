package faults

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/counter"
)

const ctName = "ct"

var ctKey = counter.Key(ctName)

// ctWL: two processes Add 1 to a shared counter, each keeping its Counter
// (and the value it cached) through stalls; a third watches the counter,
// restarting its watch every few seconds after the last revision it got, as
// a restarted process would. From etcd's record: the counter's puts go 1,
// 2, 3, ... (no lost or repeated update), every acknowledged Add is in the
// record at its revision with its value, and the watcher got every value in
// order, each once, with no gap except after a Resync.
type ctWL struct {
	procs   []*proc
	watcher *proc
	prog    atomic.Int64
}

func (w *ctWL) name() string { return "counter" }

func (w *ctWL) setup(e *env) {
	for i := range 2 {
		w.procs = append(w.procs, e.newProc(w.name(), fmt.Sprintf("ctr%d", i)))
	}
	w.watcher = e.newProc(w.name(), "ctrwatch")
	w.watcher.stallable = false
}

func (w *ctWL) progress() int64 { return w.prog.Load() }

func (w *ctWL) drain(context.Context, *env) {}

func (w *ctWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	for _, p := range w.procs {
		wg.Go(func() { w.adder(ctx, e, p) })
	}
	wg.Go(func() { w.watch(ctx, e, w.watcher) })
}

func (w *ctWL) adder(ctx context.Context, e *env, p *proc) {
	k, err := counter.New(p.client, ctName)
	if err != nil {
		e.t.Errorf("counter.New: %v", err)
		return
	}
	p.holding.Store(true) // stall it with its cached value
	defer p.holding.Store(false)
	for i := 0; i < 1000000 && ctx.Err() == nil; i++ {
		stale := p.park(ctx)
		start := time.Now()
		octx, cancel := opCtx(ctx)
		v, err := k.Add(octx, 1)
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "add", start: start, out: classify(err), stale: stale}
		if err == nil {
			o.rev, o.note = v.Revision, strconv.FormatInt(v.N, 10)
			w.prog.Add(1)
		} else {
			o.note = err.Error()
		}
		e.hist.add(o)
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

func (w *ctWL) watch(ctx context.Context, e *env, p *proc) {
	k, err := counter.New(p.client, ctName)
	if err != nil {
		e.t.Errorf("counter.New: %v", err)
		return
	}
	var after int64
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		wctx, stop := context.WithTimeout(ctx, scaled(3*time.Second))
		wt := k.Watch(wctx, after)
		for v := range wt.C() {
			note := strconv.FormatInt(v.N, 10)
			if v.Resync {
				note += " resync"
			}
			e.hist.add(op{proc: p.name, recipe: w.name(), kind: "seen", start: time.Now(), out: ok, rev: v.Revision, note: note})
			after = v.Revision
		}
		stop()
	}
}

func (w *ctWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	at := opsAt(c.ops)
	rec := map[int64]int64{} // revision -> value put
	var order []int64        // revisions of the puts, in order
	var last int64
	for _, e := range puts(c.events, ctKey) {
		n, err := strconv.ParseInt(e.value, 10, 64)
		if err != nil || n != last+1 {
			vs = append(vs, violation{w.name(), fmt.Sprintf("counter went %d -> %q at rev %d: a lost or repeated update", last, e.value, e.rev), withOp(at, e.rev)})
		}
		last = n
		rec[e.rev] = n
		order = append(order, e.rev)
	}
	acked, unsure := 0, 0
	for _, o := range c.ops {
		if o.kind != "add" {
			continue
		}
		switch o.out {
		case ok:
			acked++
			n, _ := strconv.ParseInt(o.note, 10, 64)
			if got, found := rec[o.rev]; !found || got != n {
				vs = append(vs, violation{w.name(), fmt.Sprintf("Add acknowledged %d at rev %d, not in etcd's record (record has %d, found %v)", n, o.rev, got, found), []op{o}})
			}
		case unknown:
			unsure++
		}
	}
	if int(last) < acked || int(last) > acked+unsure {
		vs = append(vs, violation{w.name(), fmt.Sprintf("final counter %d, want between %d acknowledged and %d acknowledged + unknown adds", last, acked, acked+unsure), nil})
	}
	// The watcher's values, across its restarts: each is the record's
	// value at its revision, and each follows the previous one's put
	// directly, unless marked resync.
	idx := map[int64]int{} // revision -> position in order
	for i, r := range order {
		idx[r] = i
	}
	prev, seen, resyncs := -1, 0, 0
	for _, o := range c.ops {
		if o.kind != "seen" {
			continue
		}
		seen++
		n, _ := strconv.ParseInt(strings.Fields(o.note)[0], 10, 64)
		resync := strings.HasSuffix(o.note, "resync")
		if resync {
			resyncs++
		}
		if o.rev == 0 { // the counter before its first write
			if n != 0 || prev >= 0 {
				vs = append(vs, violation{w.name(), fmt.Sprintf("watcher got %d at revision 0 after %d values", n, prev+1), []op{o}})
			}
			continue
		}
		// The first value (a snapshot of the current one) may be any.
		i, found := idx[o.rev]
		switch {
		case !found || rec[o.rev] != n:
			vs = append(vs, violation{w.name(), fmt.Sprintf("watcher got %d at rev %d, which is not in etcd's record", n, o.rev), []op{o}})
		case prev >= 0 && i != prev+1 && !(resync && i > prev):
			vs = append(vs, violation{w.name(), fmt.Sprintf("watcher got the put at rev %d (value %d) after the one at position %d: a value skipped or repeated", o.rev, n, prev), []op{o}})
		}
		if found {
			prev = i
		}
	}
	vs = append(vs, tooFew(w.name(), "adds", acked)...)
	stats := fmt.Sprintf("adds ok=%d unknown=%d failed=%d, final %d; stale-cache adds tried=%d ok=%d; watcher got %d values (%d resyncs)",
		acked, unsure, countOps(c.ops, "add", failed), last, countStale(c.ops, "add"), staleLanded(c.ops, "add"), seen, resyncs)
	return stats, vs
}
