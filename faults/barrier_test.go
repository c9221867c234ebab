package faults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/barrier"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	dbName    = "db"
	dbPrefix  = "db/.dbarrier/"
	dbParts   = "db/.dbarrier/p/"
	dbReady   = "db/.dbarrier/ready"
	dbCount   = 2 // participants per round
	dbEntered = "e:"
)

// dbWL: three processes pass a double barrier of two, round after round.
// After each Enter a process reads the barrier's keys: while its own key is
// there, the round must be marked ready. From etcd's record: a round is
// marked ready only while at least dbCount participants have entered and
// not left, and its mark is removed only once none of the participants that
// entered before it was marked is still working. Liveness: a stalled or cut
// off participant must not keep the others from finishing rounds (its lease
// ends and it counts as left).
type dbWL struct {
	procs []*proc
	prog  atomic.Int64
}

func (w *dbWL) name() string { return "barrier" }

func (w *dbWL) setup(e *env) {
	for i := range 3 {
		w.procs = append(w.procs, e.newProc(w.name(), fmt.Sprintf("dbar%d", i)))
	}
}

func (w *dbWL) progress() int64 { return w.prog.Load() }

func (w *dbWL) drain(context.Context, *env) {}

func (w *dbWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	for _, p := range w.procs {
		wg.Go(func() { w.worker(ctx, e, p) })
	}
}

func (w *dbWL) worker(ctx context.Context, e *env, p *proc) {
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		s, err := newSession(ctx, e, p)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		me := fmt.Sprintf("%s/%x", p.name, int64(s.Lease()))
		d, err := barrier.NewDouble(s, dbName, dbCount, barrier.WithValue(me))
		for j := 0; err == nil && j < 100000 && ctx.Err() == nil && s.Err() == nil; j++ {
			w.round(ctx, e, p, d, me)
		}
		if d != nil {
			cctx, cancel := opCtx(ctx)
			_ = d.Close(cctx)
			cancel()
		}
		closeSession(s)
	}
}

func (w *dbWL) round(ctx context.Context, e *env, p *proc, d *barrier.DoubleBarrier, me string) {
	start := time.Now()
	// A rendezvous of two: allow it two waits' worth before giving up
	// (giving up makes the others wait for a new partner).
	ectx, cancel := context.WithTimeout(ctx, 2*scaled(waitTimeout))
	err := d.Enter(ectx)
	cancel()
	o := op{proc: p.name, recipe: w.name(), kind: "enter", start: start, out: classify(err)}
	if err != nil {
		o.note = err.Error()
		e.hist.add(o)
		sleepCtx(ctx, 20*time.Millisecond)
		return
	}
	e.hist.add(o)
	w.prog.Add(1) // a round passed: progress, like a round left
	// While this participant's key is there, the round is marked ready.
	start = time.Now()
	octx, cancel := opCtx(ctx)
	resp, err := p.client.Get(octx, dbPrefix, clientv3.WithPrefix())
	cancel()
	if err == nil {
		own, ready := false, false
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			own = own || (strings.HasPrefix(k, dbParts) && strings.HasSuffix(string(kv.Value), ":"+me))
			ready = ready || k == dbReady
		}
		e.hist.add(op{proc: p.name, recipe: w.name(), kind: "entered-read", start: start, out: ok, rev: resp.Header.Revision,
			note: fmt.Sprintf("own=%v ready=%v", own, ready)})
	}
	p.holding.Store(true)
	stale := p.park(ctx)
	p.holding.Store(false)
	start = time.Now()
	lctx, cancel := context.WithTimeout(ctx, scaled(waitTimeout)+e.ttl)
	err = d.Leave(lctx)
	cancel()
	o = op{proc: p.name, recipe: w.name(), kind: "leave", start: start, out: classify(err), stale: stale}
	var lost *barrier.LostError
	if errors.As(err, &lost) {
		o.out, o.note = ok, "lost: "+strings.Join(lost.Values, ",")
	} else if err != nil {
		o.note = err.Error()
	}
	e.hist.add(o)
	if o.out == ok {
		w.prog.Add(1)
	}
}

func (w *dbWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	at := opsAt(c.ops)
	for _, o := range c.ops {
		if o.kind == "entered-read" && strings.Contains(o.note, "own=true") && !strings.Contains(o.note, "ready=true") {
			vs = append(vs, violation{w.name(), fmt.Sprintf("%s passed Enter, but at rev %d its key was there and the round was not ready", o.proc, o.rev), []op{o}})
		}
	}
	// Replay etcd's record of the barrier's keys.
	parts := map[string]kvEvent{} // live participant keys
	var ready int64               // create revision of the ready mark
	rounds := 0
	for _, ev := range c.events {
		switch {
		case ev.key == dbReady && !ev.del && ready == 0:
			ready, rounds = ev.rev, rounds+1
			if n := entered(parts, 0); n < dbCount {
				vs = append(vs, violation{w.name(), fmt.Sprintf("round marked ready at rev %d with %d participants entered (want %d)", ev.rev, n, dbCount), withOp(at, ev.rev)})
			}
		case ev.key == dbReady && ev.del:
			if n := entered(parts, ready); n > 0 {
				vs = append(vs, violation{w.name(), fmt.Sprintf("round ready since rev %d ended at rev %d while %d of its participants were still working", ready, ev.rev, n), withOp(at, ev.rev)})
			}
			ready = 0
		case strings.HasPrefix(ev.key, dbParts) && ev.del:
			delete(parts, ev.key)
		case strings.HasPrefix(ev.key, dbParts):
			parts[ev.key] = ev
		}
	}
	n := countOps(c.ops, "leave", ok)
	vs = append(vs, tooFew(w.name(), "rounds left", n)...)
	lostReports := 0
	for _, o := range c.ops {
		if o.kind == "leave" && strings.HasPrefix(o.note, "lost:") {
			lostReports++
		}
	}
	stats := fmt.Sprintf("rounds=%d enters ok=%d failed/unknown=%d, leaves ok=%d (reporting a lost participant %d) unknown=%d",
		rounds, countOps(c.ops, "enter", ok), countOps(c.ops, "enter", unknown)+countOps(c.ops, "enter", failed), n, lostReports, countOps(c.ops, "leave", unknown))
	return stats, vs
}

// entered counts the participants that have entered and not left, among
// those created before rev (0: all).
func entered(parts map[string]kvEvent, before int64) (n int) {
	for _, p := range parts {
		if strings.HasPrefix(p.value, dbEntered) && (before == 0 || p.create < before) {
			n++
		}
	}
	return n
}
