package faults

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	electionName   = "el"
	electionPrefix = "el/.election/"
	stateKey       = "el-data/state"
)

// electionWL: an Elector per process; the leader writes its term's token
// under the term's Guard every few milliseconds.
type electionWL struct {
	procs []*proc
	prog  atomic.Int64
}

func (w *electionWL) name() string { return "election" }

func (w *electionWL) setup(e *env) {
	for i := range 3 {
		w.procs = append(w.procs, e.newProc(w.name(), fmt.Sprintf("elect%d", i)))
	}
}

func (w *electionWL) progress() int64 { return w.prog.Load() }

func (w *electionWL) drain(context.Context, *env) {}

func (w *electionWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	for _, p := range w.procs {
		el, err := election.NewElector(p.client, election.Config{
			Name:           electionName,
			Value:          p.name,
			SessionOptions: []concurrency.SessionOption{concurrency.WithTTL(e.ttl)},
			OnElected: func(tctx context.Context, term *election.Leadership) {
				w.lead(ctx, tctx, e, p, term)
			},
		})
		if err != nil {
			e.t.Errorf("elector: %v", err)
			return
		}
		wg.Go(func() { _ = el.Run(ctx) })
	}
}

// lead runs a term; runCtx outlives the term, so a stalled leader resumes
// after its term has ended and tries one more write with its old Guard.
func (w *electionWL) lead(runCtx, tctx context.Context, e *env, p *proc, term *election.Leadership) {
	tok, guard := int64(term.Token()), term.Guard()
	e.hist.add(op{proc: p.name, recipe: w.name(), kind: "elected", start: time.Now(), out: ok, token: tok})
	p.holding.Store(true)
	defer p.holding.Store(false)
	for i := 0; i < 1000000 && tctx.Err() == nil; i++ {
		stale := p.park(runCtx)
		start := time.Now()
		octx, cancel := opCtx(runCtx)
		resp, err := guard.Do(octx, clientv3.OpPut(stateKey, strconv.FormatInt(tok, 10)))
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "write", start: start, out: classify(err), token: tok, stale: stale}
		if err == nil {
			o.rev = resp.Header.Revision
			w.prog.Add(1)
		} else {
			o.note = err.Error()
		}
		e.hist.add(o)
		if stale {
			return
		}
		sleepCtx(tctx, 20*time.Millisecond)
	}
}

func (w *electionWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	ls := lives(c.events, electionPrefix)
	at := opsAt(c.ops)
	var high int64
	terms := map[int64]bool{}
	for _, e := range puts(c.events, stateKey) {
		tok, _ := strconv.ParseInt(e.value, 10, 64)
		terms[tok] = true
		if !holds(ls, e.rev-1, 1, tok) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("leader write of term %d landed at rev %d, when it did not lead (first in line: %v)",
				tok, e.rev, firstAt(ls, e.rev-1, 1)), append(withOp(at, e.rev), rivals(c.ops, firstAt(ls, e.rev-1, 1), tok)...)})
		}
		if tok < high {
			vs = append(vs, violation{w.name(), fmt.Sprintf("term %d wrote at rev %d after term %d: two leaders", tok, e.rev, high), withOp(at, e.rev)})
		}
		high = max(high, tok)
	}
	n := countOps(c.ops, "write", ok)
	vs = append(vs, tooFew(w.name(), "leader writes", n)...)
	stats := fmt.Sprintf("terms=%d (with writes %d) leader writes ok=%d unknown=%d failed=%d; stalled-leader writes tried=%d landed=%d (each checked against the record)",
		countOps(c.ops, "elected", ok), len(terms), n, countOps(c.ops, "write", unknown), countOps(c.ops, "write", failed),
		countStale(c.ops, "write"), staleLanded(c.ops, "write"))
	return stats, vs
}
