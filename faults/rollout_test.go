package faults

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/rollout"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	roName     = "ro"
	roK        = 2
	roSteps    = 2
	roWaveSize = 10
	roData     = "ro-data/"
	roClaims   = "ro/rollout/claims/"
	roCtlT     = "ro/rollout/ctl/t/"
	roWaveKey  = "ro/rollout/ctl/wave"
	roState    = "ro/rollout/ctl/state"
	roElection = "ro/rollout/coordinator/.election/"
	roSlots    = "ro/rollout/slots/.sem/p/"
)

// roWL: one long rollout (K=2, waves of 10) run by three worker processes
// and two coordinator processes, whose sessions the schedule stalls past
// their TTL (workers, mid-step, keeping their handles) and revokes (workers'
// claims and permits, the coordinator's candidacy). Each step writes a data
// record under the step's Guard. From etcd's record: every step write
// landed while its token held the target's claim, and only after the steps
// before it were checkpointed and before it was itself (no completed step
// repeated under a valid fence, never backwards), and never under a claim
// taken while the rollout was paused (an operator pauses it for a second
// every four seconds); the targets in flight
// (first to last write of a claim) never exceed K; each target is recorded
// done once, under a claim that held; checkpoints go 0, 1, ... once each;
// waves open once each, in order.
type roWL struct {
	workers, coords []*proc
	prog            atomic.Int64
}

func (w *roWL) name() string { return "rollout" }

// roTargets is how many targets the rollout has: more than a run gets
// through, so that it runs all along (a rollout that is done makes no
// progress, and every fault after that would count as a liveness
// violation: with 120 targets, runs of 60 s against etcd processes did
// 118-120 of them, and a 3.6.17 soak reported 7 violations so, issue #17).
// Against etcd processes about 2 targets a second were done; TestFaults
// without -race did 120 in a 25 s run (4.8 a second: a short run did all
// its targets and reported the rollout done, an in-process run with
// sessions sharing their client's keepalive stream), so 12 a second of the
// run's length (runSoak's 60 s runs when CONCORD_SOAK is set without
// CONCORD_FAULT_RUN), and at least 300.
func roTargets() int {
	d := runLength()
	if os.Getenv(envSoak) != "" && os.Getenv(envRun) == "" {
		d = scaled(60 * time.Second)
	}
	return max(300, int(12*d.Seconds()))
}

func (w *roWL) setup(e *env) {
	for i := range 3 {
		w.workers = append(w.workers, e.newProc(w.name(), fmt.Sprintf("roworker%d", i)))
	}
	for i := range 2 {
		p := e.newProc(w.name(), fmt.Sprintf("rocoord%d", i))
		p.stallable = false // no park points: its faults are revokes and member faults
		w.coords = append(w.coords, p)
	}
}

func (w *roWL) progress() int64 { return w.prog.Load() }

func (w *roWL) drain(context.Context, *env) {}

func (w *roWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	n := roTargets()
	p := rollout.Plan{Steps: []string{"drain", "upgrade"}, MaxInFlight: roK, WaveSize: roWaveSize, FailureBudget: n}
	for i := range n {
		p.Targets = append(p.Targets, rollout.Target{ID: fmt.Sprintf("h%03d", i), Canary: i < 2})
	}
	for i := 0; i < 100 && ctx.Err() == nil; i++ {
		cctx, cancel := opCtx(ctx)
		err := rollout.Create(cctx, e.admin, roName, p)
		cancel()
		if err == nil {
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	// An operator pauses the rollout for a second every few seconds.
	wg.Go(func() {
		for i := 0; i < 10000 && sleepCtx(ctx, scaled(4*time.Second)); i++ {
			octx, cancel := opCtx(ctx)
			start := time.Now()
			err := rollout.Pause(octx, e.admin, roName, "operator")
			cancel()
			e.hist.add(op{proc: "rooperator", recipe: w.name(), kind: "pause", start: start, out: classify(err)})
			sleepCtx(ctx, scaled(time.Second))
			octx, cancel = opCtx(context.WithoutCancel(ctx))
			start = time.Now()
			err = rollout.Resume(octx, e.admin, roName)
			cancel()
			e.hist.add(op{proc: "rooperator", recipe: w.name(), kind: "resume", start: start, out: classify(err)})
		}
	})
	opts := func(p *proc) []rollout.Option {
		lg := newOpLog(e, p)
		return []rollout.Option{rollout.WithValue(p.name), rollout.WithLogger(lg),
			rollout.WithSessionOptions(concurrency.WithTTL(e.ttl), concurrency.WithLogger(lg))}
	}
	for _, p := range w.workers {
		wk, err := rollout.NewWorker(p.client, roName, w.step(e, p), opts(p)...)
		if err != nil {
			e.t.Errorf("NewWorker: %v", err)
			return
		}
		wg.Go(func() {
			for i := 0; i < 1000 && ctx.Err() == nil; i++ {
				if wk.Run(ctx) != nil {
					sleepCtx(ctx, 100*time.Millisecond)
				}
			}
		})
	}
	for _, p := range w.coords {
		co, err := rollout.NewCoordinator(p.client, roName, opts(p)...)
		if err != nil {
			e.t.Errorf("NewCoordinator: %v", err)
			return
		}
		wg.Go(func() {
			for i := 0; i < 1000 && ctx.Err() == nil; i++ {
				if co.Run(ctx) != nil {
					sleepCtx(ctx, 100*time.Millisecond)
				}
			}
		})
	}
}

// step writes the step's data record under its Guard; a worker may stall
// (keeping its Step) just before.
func (w *roWL) step(e *env, p *proc) rollout.StepFunc {
	return func(ctx context.Context, s rollout.Step) error {
		p.holding.Store(true)
		stale := p.park(ctx)
		p.holding.Store(false)
		start := time.Now()
		octx, cancel := opCtx(ctx)
		resp, err := s.Guard.Do(octx, clientv3.OpPut(fmt.Sprintf("%s%s/%d", roData, s.Target.ID, s.Index), strconv.FormatInt(int64(s.Token), 10)))
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "step", start: start, out: classify(err), token: int64(s.Token), stale: stale,
			note: fmt.Sprintf("%s/%d", s.Target.ID, s.Index)}
		if err == nil {
			o.rev = resp.Header.Revision
			w.prog.Add(1)
		} else {
			o.note += " " + err.Error()
		}
		e.hist.add(o)
		return err
	}
}

func (w *roWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	at := opsAt(c.ops)
	claimLines := map[string][]life{}
	line := func(id string) []life {
		if l, ok := claimLines[id]; ok {
			return l
		}
		claimLines[id] = lives(c.events, roClaims+id+"/.lock/")
		return claimLines[id]
	}
	// Replay the record in order: checkpoints, step writes, done records.
	saved := map[string]int{} // target -> last checkpointed step (-1 none)
	type span struct {
		first, last int64
	}
	spans := map[int64]*span{} // claim token -> its writes
	touch := func(tok, rev int64) {
		if sp := spans[tok]; sp != nil {
			sp.last = rev
		} else {
			spans[tok] = &span{rev, rev}
		}
	}
	done := map[string]int{}
	var finished int64 // the revision at which the rollout was done
	var waves []string
	steps := 0
	// Paused spans of the record: [from, to) by revision (to 0: still).
	type pause struct{ from, to int64 }
	var pauses []pause
	pausedAt := func(t, r int64) bool { // paused all through [t, r]
		for _, p := range pauses {
			if p.from <= t && (p.to == 0 || r < p.to) {
				return true
			}
		}
		return false
	}
	for _, ev := range c.events {
		switch {
		case ev.key == roState && !ev.del && strings.Contains(ev.value, `"state":"done"`):
			finished = ev.rev
		case ev.key == roState && !ev.del:
			isPaused := strings.Contains(ev.value, `"state":"paused"`)
			open := len(pauses) > 0 && pauses[len(pauses)-1].to == 0
			if isPaused && !open {
				pauses = append(pauses, pause{from: ev.rev})
			} else if !isPaused && open {
				pauses[len(pauses)-1].to = ev.rev
			}
		case strings.HasPrefix(ev.key, "ro/rollout/progress/") && strings.HasSuffix(ev.key, "/.checkpoint"):
			id := strings.TrimSuffix(strings.TrimPrefix(ev.key, "ro/rollout/progress/"), "/.checkpoint")
			last, ok := saved[id]
			if !ok {
				last = -1
			}
			if ev.del {
				delete(saved, id)
				continue
			}
			n, _ := strconv.Atoi(ev.value)
			if n != last+1 {
				vs = append(vs, violation{w.name(), fmt.Sprintf("%s's checkpoint went %d -> %d at rev %d", id, last, n, ev.rev), withOp(at, ev.rev)})
			}
			saved[id] = n
		case strings.HasPrefix(ev.key, roData) && !ev.del:
			steps++
			id, si, _ := strings.Cut(strings.TrimPrefix(ev.key, roData), "/")
			s, _ := strconv.Atoi(si)
			tok, _ := strconv.ParseInt(ev.value, 10, 64)
			if !holds(line(id), ev.rev-1, 1, tok) {
				vs = append(vs, violation{w.name(), fmt.Sprintf("step %d of %s written by token %d at rev %d, which did not hold the target (%v)", s, id, tok, ev.rev, firstAt(line(id), ev.rev-1, 1)), withOp(at, ev.rev)})
			}
			last, ok := saved[id]
			if !ok {
				last = -1
			}
			if s != last+1 {
				vs = append(vs, violation{w.name(), fmt.Sprintf("step %d of %s ran at rev %d with step %d checkpointed: a completed step repeated or one skipped", s, id, ev.rev, last), withOp(at, ev.rev)})
			}
			if pausedAt(tok, ev.rev) {
				vs = append(vs, violation{w.name(), fmt.Sprintf("step %d of %s ran at rev %d under a claim taken at rev %d, the rollout paused all along: a target taken while paused", s, id, ev.rev, tok), withOp(at, ev.rev)})
			}
			touch(tok, ev.rev)
		case strings.HasPrefix(ev.key, roCtlT) && !ev.del && strings.Contains(ev.value, `"state":"done"`):
			id := strings.TrimPrefix(ev.key, roCtlT)
			done[id]++
			var tok int64
			if _, after, ok := strings.Cut(ev.value, `"token":`); ok {
				tok, _ = strconv.ParseInt(strings.TrimRight(after, "}"), 10, 64)
			}
			if done[id] > 1 {
				vs = append(vs, violation{w.name(), fmt.Sprintf("%s recorded done %d times (rev %d)", id, done[id], ev.rev), withOp(at, ev.rev)})
			}
			if !holds(line(id), ev.rev-1, 1, tok) {
				vs = append(vs, violation{w.name(), fmt.Sprintf("%s recorded done at rev %d by token %d, which did not hold it", id, ev.rev, tok), withOp(at, ev.rev)})
			}
			touch(tok, ev.rev)
		case ev.key == roWaveKey && !ev.del:
			waves = append(waves, ev.value)
		}
	}
	for i, v := range waves {
		if v != strconv.Itoa(i) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("waves opened %v: not once each, in order", waves), nil})
			break
		}
	}
	// In flight: the claims' spans overlap at most K deep.
	type edge struct {
		rev   int64
		delta int
	}
	var edges []edge
	for _, sp := range spans {
		edges = append(edges, edge{sp.first, +1}, edge{sp.last, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if a.rev != b.rev {
			return int(a.rev - b.rev)
		}
		return b.delta - a.delta
	})
	depth, deepest := 0, 0
	for _, ed := range edges {
		depth += ed.delta
		deepest = max(deepest, depth)
		if depth > roK {
			vs = append(vs, violation{w.name(), fmt.Sprintf("%d targets in flight at rev %d (limit %d)", depth, ed.rev, roK), withOp(at, ed.rev)})
		}
	}
	if finished != 0 {
		vs = append(vs, violation{w.name(), fmt.Sprintf("the rollout was done at rev %d, before the run ended: it makes no progress after that, so any liveness violation after it is void (the workload needs more targets than roTargets gives)", finished), nil})
	}
	n := countOps(c.ops, "step", ok)
	vs = append(vs, tooFew(w.name(), "steps", n)...)
	stats := fmt.Sprintf("steps ok=%d unknown=%d failed=%d (%d in etcd's record), targets done %d, waves opened %d, pauses %d, deepest in flight %d of %d; stale-handle steps tried=%d landed=%d (each checked against the record); permits seen %d",
		n, countOps(c.ops, "step", unknown), countOps(c.ops, "step", failed), steps, len(done), max(0, len(waves)-1), len(pauses), deepest, roK,
		countStale(c.ops, "step"), staleLanded(c.ops, "step"), len(lives(c.events, roSlots)))
	return stats, vs
}

// A rollout done before the run ended is reported as such: the liveness
// violations after it are not a stuck recovery.
func TestCheckRolloutDoneEarly(t *testing.T) {
	ev := []kvEvent{put(roState, `{"state":"running"}`, 1, 1), put(roState, `{"state":"done"}`, 1, 2)}
	wantViolation(t, runCheck(&roWL{}, nil, ev), "the rollout was done at rev 2")
	wantNone(t, runCheck(&roWL{}, nil, ev[:1]))
}
