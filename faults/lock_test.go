package faults

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	lockName   = "lk"
	lockPrefix = "lk/.lock/"
	counterKey = "lk-data/counter"
	resKey     = "lk-data/res"
)

// lockWL: processes take the Mutex in turn. Each hold reads a counter, then
// writes counter+1 under the lock's Guard (a lost update would show two
// holders at once), and writes its token to a fenced resource: a key that
// only accepts a token at least as high as the one it holds, as an external
// store fencing by token would.
type lockWL struct {
	procs []*proc
	prog  atomic.Int64
	wg    *sync.WaitGroup
}

func (w *lockWL) name() string { return "lock" }

func (w *lockWL) setup(e *env) {
	for i := range 3 {
		w.procs = append(w.procs, e.newProc(w.name(), fmt.Sprintf("lock%d", i)))
	}
}

func (w *lockWL) progress() int64 { return w.prog.Load() }

func (w *lockWL) drain(context.Context, *env) {}

func (w *lockWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	w.wg = wg
	for _, p := range w.procs {
		wg.Go(func() { w.worker(ctx, e, p) })
	}
}

func (w *lockWL) worker(ctx context.Context, e *env, p *proc) {
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		s, err := newSession(ctx, e, p)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		m, err := lock.NewMutex(s, lockName, lock.WithValue(p.name))
		for j := 0; err == nil && j < 100000 && ctx.Err() == nil && s.Err() == nil; j++ {
			w.hold(ctx, e, p, s, m)
		}
		closeSession(s)
	}
}

func (w *lockWL) hold(ctx context.Context, e *env, p *proc, s *concurrency.Session, m *lock.Mutex) {
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, scaled(waitTimeout))
	err := m.Lock(lctx)
	cancel()
	if err != nil {
		// Some errors come back at once (a pending Unlock): do not spin.
		sleepCtx(ctx, 20*time.Millisecond)
		return
	}
	// The handle a paused process keeps: the token and guard of this hold.
	tok, guard := int64(m.Token()), m.Guard()
	e.hist.add(op{proc: p.name, recipe: w.name(), kind: "acquire", start: start, out: ok, token: tok, lease: int64(s.Lease())})
	// Record when the holder learns the hold is lost (other than by its
	// own Unlock): the design's bar is that this comes before any newer
	// holder begins.
	done := m.Done()
	var released atomic.Bool
	w.wg.Go(func() {
		select {
		case <-done:
			if !released.Load() {
				e.hist.add(op{proc: p.name, recipe: w.name(), kind: "lost", start: time.Now(), out: ok, token: tok,
					lease: int64(s.Lease()), note: fmt.Sprint(s.Err()), valid: (*session.Session)(s).ValidUntil()})
			}
		case <-ctx.Done():
		}
	})
	p.holding.Store(true)
	defer func() {
		p.holding.Store(false)
		released.Store(true)
		uctx, cancel := opCtx(ctx)
		_ = m.Unlock(uctx)
		cancel()
	}()
	for range 2 {
		n, err := readCounter(ctx, p.client)
		if err != nil {
			return
		}
		stale := p.park(ctx)
		start := time.Now()
		octx, cancel := opCtx(ctx)
		resp, err := guard.Do(octx, clientv3.OpPut(counterKey, fmt.Sprintf("%d %d", n+1, tok)))
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "incr", start: start, out: classify(err), token: tok,
			note: fmt.Sprintf("%d->%d", n, n+1), stale: stale}
		if err == nil {
			o.rev = resp.Header.Revision
			w.prog.Add(1)
		} else {
			o.note += " " + err.Error()
		}
		e.hist.add(o)
		w.fenced(ctx, e, p, tok, stale)
		if err != nil || stale {
			return
		}
	}
}

func readCounter(ctx context.Context, c *clientv3.Client) (int64, error) {
	octx, cancel := opCtx(ctx)
	defer cancel()
	resp, err := c.Get(octx, counterKey)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	n, _, _ := strings.Cut(string(resp.Kvs[0].Value), " ")
	return strconv.ParseInt(n, 10, 64)
}

func padToken(t int64) string { return fmt.Sprintf("%020d", t) }

// fenced writes tok to the fenced resource, which refuses a token lower than
// the one it holds.
func (w *lockWL) fenced(ctx context.Context, e *env, p *proc, tok int64, stale bool) {
	start := time.Now()
	octx, cancel := opCtx(ctx)
	resp, err := p.client.Txn(octx).
		If(clientv3.Compare(clientv3.Value(resKey), ">", padToken(tok))).
		Then(clientv3.OpGet(resKey)).
		Else(clientv3.OpPut(resKey, padToken(tok))).
		Commit()
	cancel()
	o := op{proc: p.name, recipe: w.name(), kind: "fenced", start: start, token: tok, stale: stale}
	switch {
	case err != nil:
		o.out, o.note = unknown, err.Error()
	case resp.Succeeded:
		o.out, o.note = failed, "refused: resource holds "+string(resp.Responses[0].GetResponseRange().Kvs[0].Value)
	default:
		o.out, o.rev = ok, resp.Header.Revision
	}
	e.hist.add(o)
}

func (w *lockWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	ls := lives(c.events, lockPrefix)
	at := opsAt(c.ops)
	issued := map[int64]bool{}
	for _, l := range ls {
		issued[l.create] = true
	}
	// One holder at every revision: each guarded increment landed while its
	// token's key was first in line, and no update was lost.
	var last int64
	for _, e := range puts(c.events, counterKey) {
		ns, ts, _ := strings.Cut(e.value, " ")
		n, _ := strconv.ParseInt(ns, 10, 64)
		tok, _ := strconv.ParseInt(ts, 10, 64)
		if !holds(ls, e.rev-1, 1, tok) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("counter written at rev %d by token %d, which did not hold the lock (first in line: %v)",
				e.rev, tok, firstAt(ls, e.rev-1, 1)), append(withOp(at, e.rev), rivals(c.ops, firstAt(ls, e.rev-1, 1), tok)...)})
		}
		if n != last+1 {
			vs = append(vs, violation{w.name(), fmt.Sprintf("counter went %d -> %d at rev %d (token %d): a lost or repeated update", last, n, e.rev, tok), withOp(at, e.rev)})
		}
		last = n
	}
	acked, unk := countOps(c.ops, "incr", ok), countOps(c.ops, "incr", unknown)
	if last < int64(acked) || last > int64(acked+unk) {
		vs = append(vs, violation{w.name(), fmt.Sprintf("counter is %d, want between %d acknowledged and %d (acknowledged + unknown) increments", last, acked, acked+unk), nil})
	}
	// Every acknowledged increment is in etcd's record where it said.
	landed := map[int64]bool{}
	for _, e := range puts(c.events, counterKey) {
		landed[e.rev] = true
	}
	for _, o := range c.ops {
		if o.kind == "incr" && o.out == ok && !landed[o.rev] {
			vs = append(vs, violation{w.name(), "an acknowledged increment is not in etcd's record", []op{o}})
		}
	}
	// The fenced resource accepted tokens only in increasing order, and
	// only tokens the lock issued.
	var high int64
	for _, e := range puts(c.events, resKey) {
		tok, _ := strconv.ParseInt(e.value, 10, 64)
		if tok < high {
			vs = append(vs, violation{w.name(), fmt.Sprintf("the fenced resource accepted stale token %d at rev %d after token %d", tok, e.rev, high), withOp(at, e.rev)})
		}
		if !issued[tok] {
			vs = append(vs, violation{w.name(), fmt.Sprintf("the fenced resource accepted token %d at rev %d, which the lock never issued", tok, e.rev), withOp(at, e.rev)})
		}
		high = max(high, tok)
	}
	vs = append(vs, tooFew(w.name(), "guarded increments", acked)...)
	lostVs, margin, etcdEarly := lostBeforeTakeover(w.name(), c)
	vs = append(vs, lostVs...)
	staleRefused := 0
	for _, o := range c.ops {
		if o.kind == "fenced" && o.stale && o.out == failed {
			staleRefused++
		}
	}
	stats := fmt.Sprintf("holds=%d lost=%d (Done before the next holder began, by at least %s; ended early by etcd %d) increments ok=%d unknown=%d failed=%d counter=%d fenced ok=%d refused=%d; stale handles: increments tried=%d landed=%d (each checked against the record), fenced tried=%d refused=%d",
		countOps(c.ops, "acquire", ok), countOps(c.ops, "lost", ok), fmtMargin(margin), etcdEarly, acked, unk, countOps(c.ops, "incr", failed), last,
		countOps(c.ops, "fenced", ok), countOps(c.ops, "fenced", failed),
		countStale(c.ops, "incr"), staleLanded(c.ops, "incr"), countStale(c.ops, "fenced"), staleRefused)
	return stats, vs
}

// lostBeforeTakeover checks the design's bar: a holder's Done closes before
// any newer holder can begin, when the hold is lost to an expired lease (a
// revoked lease or a deleted key ends a hold at once on the server, so there
// the holder can only learn of it afterwards: leases the schedule revoked,
// and leases etcd revoked before their acknowledged TTL, are counted apart).
// Both times are taken by the observing goroutines, so scheduling delays
// only ever make a true ordering look closer, never reversed by more than
// the delay. It also returns the smallest margin seen, and how many holds
// etcd ended early.
func lostBeforeTakeover(recipe string, c *checkIn) (vs []violation, margin time.Duration, early int) {
	margin = time.Duration(-1)
	for _, l := range c.ops {
		if l.kind != "lost" || c.e.revokedLease(l.lease) {
			continue
		}
		var next *op
		for i, a := range c.ops {
			if a.kind == "acquire" && a.token > l.token && (next == nil || a.end.Before(next.end)) {
				next = &c.ops[i]
			}
		}
		if next == nil {
			continue
		}
		d := next.end.Sub(l.start)
		if d < 0 && c.e.serverRevokedEarly(l.valid, next.end) {
			early++
			c.e.t.Logf("%s: hold %d was granted %v before hold %d learned it was lost (%s), %v before its lease's acknowledged TTL ran out, %v after a stopped leader resumed: etcd revoked the lease early (etcd-io/etcd#15247)",
				recipe, next.token, -d.Round(time.Millisecond), l.token, l.note, l.valid.Sub(next.end).Round(time.Millisecond), c.e.sinceLeaderResume(next.end).Round(time.Millisecond))
			continue
		}
		if d < 0 {
			vs = append(vs, violation{recipe, fmt.Sprintf("hold %d was granted %v before hold %d learned it was lost (%s; lease %x, acknowledged valid until %v after that grant; last leader resume %v before it)",
				next.token, -d.Round(time.Millisecond), l.token, l.note, l.lease, l.valid.Sub(next.end).Round(time.Millisecond), c.e.sinceLeaderResume(next.end).Round(time.Millisecond)), []op{l, *next}})
			continue
		}
		if margin < 0 || d < margin {
			margin = d
		}
	}
	if margin > 0 {
		margin = margin.Round(time.Millisecond)
	}
	return vs, margin, early
}

func fmtMargin(d time.Duration) string {
	if d < 0 {
		return "n/a"
	}
	return d.String()
}
