package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	mlLocks    = 4
	mlDataPref = "ml-data/"
)

func mlName(j int) string         { return "ml/" + strconv.Itoa(j) }
func mlLinePrefix(j int) string   { return mlName(j) + "/.lock/" }
func mlResKey(name string) string { return mlDataPref + name }

// mlWL: processes take random overlapping sets of 2-3 of 4 locks with a
// Multi and, under the Multi's Guard, write each lock's fencing token to
// that lock's resource key, keeping their handles through stalls. From
// etcd's record: every resource write landed while its token's key was
// first in that lock's line (one holder per lock per revision, whatever the
// set). Liveness (the suite's progress check) catches a deadlock.
type mlWL struct {
	procs []*proc
	prog  atomic.Int64
}

func (w *mlWL) name() string { return "multilock" }

func (w *mlWL) setup(e *env) {
	for i := range 3 {
		w.procs = append(w.procs, e.newProc(w.name(), fmt.Sprintf("mlock%d", i)))
	}
}

func (w *mlWL) progress() int64 { return w.prog.Load() }

func (w *mlWL) drain(context.Context, *env) {}

func (w *mlWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	for i, p := range w.procs {
		wg.Go(func() { w.worker(ctx, e, p, rand.New(rand.NewPCG(uint64(e.seed), uint64(i)))) })
	}
}

func (w *mlWL) worker(ctx context.Context, e *env, p *proc, r *rand.Rand) {
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		s, err := newSession(ctx, e, p)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		for j := 0; j < 100000 && ctx.Err() == nil && s.Err() == nil; j++ {
			var set []string
			for _, k := range r.Perm(mlLocks)[:2+r.IntN(2)] {
				set = append(set, mlName(k))
			}
			m, err := lock.NewMulti(s, set, lock.WithValue(p.name))
			if err != nil {
				e.t.Errorf("NewMulti: %v", err)
				return
			}
			w.hold(ctx, e, p, m)
		}
		closeSession(s)
	}
}

func (w *mlWL) hold(ctx context.Context, e *env, p *proc, m *lock.Multi) {
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, scaled(waitTimeout))
	err := m.Lock(lctx)
	cancel()
	if err != nil {
		sleepCtx(ctx, 20*time.Millisecond)
		return
	}
	e.hist.add(op{proc: p.name, recipe: w.name(), kind: "lock", start: start, out: ok, token: int64(m.Token()), note: strings.Join(m.Names(), ",")})
	guard := m.Guard()
	var ops []clientv3.Op
	for _, name := range m.Names() {
		ops = append(ops, clientv3.OpPut(mlResKey(name), strconv.FormatInt(int64(m.TokenOf(name)), 10)))
	}
	p.holding.Store(true)
	defer func() {
		p.holding.Store(false)
		uctx, cancel := opCtx(ctx)
		_ = m.Unlock(uctx)
		cancel()
	}()
	stale := p.park(ctx)
	start = time.Now()
	octx, cancel := opCtx(ctx)
	resp, err := guard.Do(octx, ops...)
	cancel()
	o := op{proc: p.name, recipe: w.name(), kind: "write", start: start, out: classify(err), token: int64(m.Token()), stale: stale, note: strings.Join(m.Names(), ",")}
	if err == nil {
		o.rev = resp.Header.Revision
		w.prog.Add(1)
	} else {
		o.note += " " + err.Error()
	}
	e.hist.add(o)
}

func (w *mlWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	at := opsAt(c.ops)
	lines := make([][]life, mlLocks)
	for j := range mlLocks {
		lines[j] = lives(c.events, mlLinePrefix(j))
	}
	writes := 0
	for _, ev := range putsUnder(c.events, mlDataPref) {
		writes++
		name := strings.TrimPrefix(ev.key, mlDataPref)
		j, err := strconv.Atoi(strings.TrimPrefix(name, "ml/"))
		tok, _ := strconv.ParseInt(ev.value, 10, 64)
		if err != nil || j < 0 || j >= mlLocks {
			vs = append(vs, violation{w.name(), fmt.Sprintf("write to unknown resource %s", ev.key), nil})
			continue
		}
		if !holds(lines[j], ev.rev-1, 1, tok) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("%s written with token %d at rev %d, when that token did not hold the lock (%v)",
				ev.key, tok, ev.rev, firstAt(lines[j], ev.rev-1, 1)), append(withOp(at, ev.rev), rivals(c.ops, firstAt(lines[j], ev.rev-1, 1), tok)...)})
		}
	}
	n := countOps(c.ops, "write", ok)
	vs = append(vs, tooFew(w.name(), "guarded multi-lock writes", n)...)
	stats := fmt.Sprintf("holds=%d guarded writes ok=%d unknown=%d failed=%d (%d resource puts in etcd's record); stale-handle writes tried=%d landed=%d (each checked against the record)",
		countOps(c.ops, "lock", ok), n, countOps(c.ops, "write", unknown), countOps(c.ops, "write", failed), writes, countStale(c.ops, "write"), staleLanded(c.ops, "write"))
	return stats, vs
}
