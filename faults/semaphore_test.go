package faults

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	semName    = "sm"
	semPrefix  = "sm/.sem/p/"
	slotPrefix = "sm-data/slot/"
	semLimit   = 2
)

// semWL: more processes than permits. Each holder writes a slot record under
// its permit's Guard, twice, some time apart; from the revisions the slot
// records landed at, at most semLimit holders may overlap.
type semWL struct {
	procs []*proc
	prog  atomic.Int64
}

func (w *semWL) name() string { return "semaphore" }

func (w *semWL) setup(e *env) {
	for i := range 4 {
		w.procs = append(w.procs, e.newProc(w.name(), fmt.Sprintf("sem%d", i)))
	}
}

func (w *semWL) progress() int64 { return w.prog.Load() }

func (w *semWL) drain(context.Context, *env) {}

func (w *semWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	for _, p := range w.procs {
		wg.Go(func() { w.worker(ctx, e, p) })
	}
}

func (w *semWL) worker(ctx context.Context, e *env, p *proc) {
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		s, err := newSession(ctx, e, p)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		sem, err := semaphore.New(s, semName, semLimit, semaphore.WithValue(p.name))
		for j := 0; err == nil && j < 100000 && ctx.Err() == nil && s.Err() == nil; j++ {
			w.hold(ctx, e, p, sem)
		}
		if sem != nil {
			sem.Close(context.Background())
		}
		closeSession(s)
	}
}

func (w *semWL) hold(ctx context.Context, e *env, p *proc, sem *semaphore.Semaphore) {
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, scaled(waitTimeout))
	pm, err := sem.Acquire(actx)
	cancel()
	if err != nil {
		sleepCtx(ctx, 20*time.Millisecond) // do not spin on quick errors
		return
	}
	tok, guard := int64(pm.Token()), pm.Guard()
	e.hist.add(op{proc: p.name, recipe: w.name(), kind: "acquire", start: start, out: ok, token: tok})
	p.holding.Store(true)
	defer func() {
		p.holding.Store(false)
		rctx, cancel := opCtx(ctx)
		_ = pm.Release(rctx)
		cancel()
	}()
	for k := range 2 {
		stale := p.park(ctx)
		start := time.Now()
		octx, cancel := opCtx(ctx)
		resp, err := guard.Do(octx, clientv3.OpPut(slotPrefix+strconv.FormatInt(tok, 10), fmt.Sprintf("%d %d", tok, k)))
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "slot", start: start, out: classify(err), token: tok, stale: stale}
		if err == nil {
			o.rev = resp.Header.Revision
			w.prog.Add(1)
		} else {
			o.note = err.Error()
		}
		e.hist.add(o)
		if err != nil || stale {
			return
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

func (w *semWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	ls := lives(c.events, semPrefix)
	at := opsAt(c.ops)
	// Every slot record landed while its permit was among the first
	// semLimit keys in line.
	type span struct{ tok, first, last int64 }
	spans := map[int64]*span{}
	for _, e := range putsUnder(c.events, slotPrefix) {
		tok, _ := strconv.ParseInt(strings.TrimPrefix(e.key, slotPrefix), 10, 64)
		if !holds(ls, e.rev-1, semLimit, tok) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("slot of permit %d written at rev %d, when it was not among the first %d in line (%v)",
				tok, e.rev, semLimit, firstAt(ls, e.rev-1, semLimit)), append(withOp(at, e.rev), rivals(c.ops, firstAt(ls, e.rev-1, semLimit), tok)...)})
		}
		if sp := spans[tok]; sp != nil {
			sp.last = e.rev
		} else {
			spans[tok] = &span{tok, e.rev, e.rev}
		}
	}
	// The holders' intervals (first to last slot write) overlap at most
	// semLimit deep at every revision.
	type edge struct {
		rev   int64
		delta int
		tok   int64
	}
	var edges []edge
	for _, sp := range spans {
		edges = append(edges, edge{sp.first, +1, sp.tok}, edge{sp.last, -1, sp.tok})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if a.rev != b.rev {
			return int(a.rev - b.rev)
		}
		return b.delta - a.delta // opening before closing at one revision
	})
	depth, deepest := 0, 0
	for _, ed := range edges {
		depth += ed.delta
		deepest = max(deepest, depth)
		if depth > semLimit {
			vs = append(vs, violation{w.name(), fmt.Sprintf("%d permits held at once at rev %d (limit %d)", depth, ed.rev, semLimit), withOp(at, ed.rev)})
		}
	}
	vs = append(vs, w.leasesGone(c)...)
	n := countOps(c.ops, "slot", ok)
	vs = append(vs, tooFew(w.name(), "guarded slot writes", n)...)
	stats := fmt.Sprintf("permits=%d slot writes ok=%d unknown=%d failed=%d, deepest overlap %d of %d; stale-handle slot writes tried=%d landed=%d (each checked against the record)",
		countOps(c.ops, "acquire", ok), n, countOps(c.ops, "slot", unknown), countOps(c.ops, "slot", failed),
		deepest, semLimit, countStale(c.ops, "slot"), staleLanded(c.ops, "slot"))
	return stats, vs
}

// leasesGone checks that no permit outlives its holder's lease: every
// permit key left in etcd has a live lease, and once every holder has
// closed its session the permits are gone within a TTL.
func (w *semWL) leasesGone(c *checkIn) []violation {
	if c.e.admin == nil { // the checkers' own tests
		return nil
	}
	var left []string
	var vs []violation
	gone := pollUntil(c.ctx, c.e.ttl+scaled(2*time.Second), func() bool {
		left = left[:0]
		octx, cancel := opCtx(c.ctx)
		defer cancel()
		resp, err := c.e.admin.Get(octx, semPrefix, clientv3.WithPrefix())
		if err != nil {
			return false
		}
		for _, kv := range resp.Kvs {
			ttl, err := c.e.admin.TimeToLive(octx, clientv3.LeaseID(kv.Lease))
			if kv.Lease == 0 || (err == nil && ttl.TTL <= 0) {
				vs = append(vs, violation{w.name(), fmt.Sprintf("permit %s outlives its lease %x", kv.Key, kv.Lease), nil})
			}
			left = append(left, string(kv.Key))
		}
		return len(left) == 0 || len(vs) > 0
	})
	if !gone {
		vs = append(vs, violation{w.name(), fmt.Sprintf("permits still held %v after every holder closed its session", left), nil})
	}
	return vs
}
