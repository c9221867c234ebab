package faults

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
)

// shortSeeds is how many seeds a default (CI) run tries.
const shortSeeds = 3

func runLength() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(envRun)); err == nil && d > 0 {
		return d
	}
	return scaled(16 * time.Second)
}

// TestFaults runs every recipe under a seeded random fault schedule and
// checks their guarantees. By default it tries a few fresh seeds, each for a
// short run; CONCORD_FAULT_SEED=n replays seed n; CONCORD_SOAK=30m runs seed
// after seed for 30 minutes and reports the totals.
func TestFaults(t *testing.T) { runSeeds(t, "") }

// TestProcessFaults is TestFaults on a 3-member cluster of etcd server
// processes run from the binary CONCORD_ETCD_BIN names (scripts/etcd-bin.sh
// VERSION prints one): whole processes are lost instead of embedded
// members — a member SIGKILLed and restarted on its data dir, the leader
// among them; a member SIGSTOPped past the election timeout, its sockets
// left open, then SIGCONTed; every member killed at once and the cluster
// restarted — while client processes are stalled and cut off and leases
// revoked as in TestFaults. The workloads and checks are TestFaults' own;
// the same seed, run-length and soak variables apply.
func TestProcessFaults(t *testing.T) {
	bin := embedtest.Binary()
	if bin == "" {
		t.Skipf("needs an etcd server binary: %s=$(scripts/etcd-bin.sh 3.5.36)", embedtest.BinaryEnv)
	}
	runSeeds(t, bin)
}

// runSeeds runs TestFaults' seeds, or its soak, on embedded members (bin
// empty) or on processes of bin.
func runSeeds(t *testing.T, bin string) {
	if soak := os.Getenv(envSoak); soak != "" {
		d, err := time.ParseDuration(soak)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSoak, soak, err)
		}
		runSoak(t, d, bin)
		return
	}
	var seeds []int64
	if s := os.Getenv(envSeed); s != "" {
		seed, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
		seeds = []int64{seed}
	} else {
		base := time.Now().UnixNano() % 1000000000
		for i := range shortSeeds {
			seeds = append(seeds, base+int64(i))
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runSeed(t, seed, runLength(), bin)
		})
	}
}

func runSoak(t *testing.T, d time.Duration, bin string) {
	var total result
	deadline := time.Now().Add(d)
	runLen := runLength()
	if os.Getenv(envRun) == "" {
		runLen = scaled(60 * time.Second)
	}
	for i := 0; i < 100000; i++ {
		// A whole run or none: a run cut to the time left had no room
		// for a fault, and failed the soak as one that checked nothing.
		if i > 0 && time.Until(deadline) < runLen {
			break
		}
		seed := time.Now().UnixNano() % 1000000000
		var r result
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r = runSeed(t, seed, runLen, bin)
		})
		r.runs = 1
		if !ok && r.violations == 0 {
			r.violations = 1 // failed outside the checks (a hang, a broken record)
		}
		total.add(r)
		t.Logf("soak: %d runs, %d operations (%d ok), %d faults (%s), %d compactions, %d violations after %v",
			total.runs, total.ops, total.okOps, total.faults, total.kinds(), total.compactions, total.violations, since(deadline.Add(-d)))
	}
}

// result sums up one run.
type result struct {
	runs, ops, okOps, faults, violations int
	compactions                          int64
	byKind                               map[string]int
}

func (r *result) add(o result) {
	r.runs += o.runs
	r.ops += o.ops
	r.okOps += o.okOps
	r.faults += o.faults
	r.violations += o.violations
	r.compactions += o.compactions
	if r.byKind == nil {
		r.byKind = map[string]int{}
	}
	for k, n := range o.byKind {
		r.byKind[k] += n
	}
}

func (r result) kinds() string {
	var out []string
	for k, n := range r.byKind {
		out = append(out, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// runSeed runs seed's schedule for runLen on 3 embedded members (bin
// empty) or 3 processes of the etcd binary bin.
func runSeed(t *testing.T, seed int64, runLen time.Duration, bin string) result {
	e := &env{t: t, seed: seed, ttl: sessionTTL(), hist: &history{}}
	if bin == "" {
		e.cl = embedtest.StartCluster(t, 3, embedtest.FastTicks())
		e.mem, e.admin, e.tracks = e.cl, e.cl.Client, tracks
	} else {
		e.pc = embedtest.StartProcessCluster(t, bin, 3, embedtest.FastTicks())
		e.mem, e.admin, e.tracks = e.pc, e.pc.Client, processTracks
		t.Logf("etcd %s, 3 processes", e.pc.Version())
	}
	ctx, cancel := context.WithTimeout(context.Background(), runLen+scaled(3*time.Minute))
	defer cancel()

	resp, err := e.admin.Get(ctx, "\x00faults-start")
	if err != nil {
		t.Fatal(err)
	}
	recCtx, stopRec := context.WithCancel(ctx)
	e.rec = startRecorder(recCtx, e.admin, resp.Header.Revision+1)
	defer func() { stopRec(); <-e.rec.done }()

	wls := workloads(seed, bin != "")
	for _, w := range wls {
		w.setup(e)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range wls {
		w.run(runCtx, e, &wg)
	}
	compCtx, stopCompact := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	cwg.Go(func() { e.compact(compCtx) })

	var vs []violation
	var done []injected
	begin := time.Now()
	// Every workload works before any fault.
	in := injected{fault: fault{kind: -1}, healed: time.Now(), target: "start"}
	vs = append(vs, e.awaitProgress(ctx, &in, wls, map[string]int64{})...)

	var mu sync.Mutex
	var fwg sync.WaitGroup
	for track := range e.tracks {
		fwg.Go(func() {
			for _, f := range plan(seed, e.tracks, track, 1000, e.ttl) {
				if time.Since(begin)+f.cost() > runLen {
					break
				}
				sleepCtx(ctx, f.gap)
				in := e.inject(ctx, f, wls)
				var v []violation
				if in.skipped == "" {
					v = e.awaitProgress(ctx, &in, wls, progressOf(wls))
				}
				mu.Lock()
				done = append(done, in)
				vs = append(vs, v...)
				mu.Unlock()
				t.Logf("fault %s", in)
			}
		})
	}
	fwg.Wait()
	slices.SortFunc(done, func(a, b injected) int { return a.start.Compare(b.start) })

	for _, w := range wls {
		w.drain(ctx, e)
	}
	stopRun()
	if !waitGroup(&wg, scaled(10*time.Second)) {
		t.Errorf("workers did not stop within %v of the end of the run (see TestNewSessionHonoursContext); their goroutines:\n%s", scaled(10*time.Second), concordStacks())
	}
	stopCompact()
	cwg.Wait()

	// The record is complete up to a revision written after everything.
	end, err := e.admin.Put(ctx, "\x00faults-end", "")
	if err != nil {
		t.Fatal(err)
	}
	if !pollUntil(ctx, scaled(10*time.Second), func() bool { return e.rec.seenRev() >= end.Header.Revision }) {
		t.Fatalf("the recorder saw revision %d, want %d", e.rec.seenRev(), end.Header.Revision)
	}
	if err := e.rec.err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rec.verify(ctx, e.admin, end.Header.Revision); err != nil {
		t.Error(err)
	}
	events := e.rec.all()
	ops := e.hist.all()
	var res result
	res.runs, res.ops, res.compactions = 1, len(ops), e.compactions.Load()
	res.ops = 0
	for _, o := range ops {
		if o.kind == "log" {
			continue // a library's warning, not an operation
		}
		res.ops++
		if o.out == ok {
			res.okOps++
		}
	}
	res.byKind = map[string]int{}
	for _, in := range done {
		if in.skipped == "" {
			res.faults++
			res.byKind[in.kind.String()]++
		}
	}
	if res.faults == 0 {
		vs = append(vs, violation{"suite", "no fault was injected: the run checked nothing", nil})
	}
	var stats []string
	for _, w := range wls {
		st, wvs := w.check(&checkIn{e: e, ops: e.hist.byRecipe(w.name()), events: events, ctx: ctx})
		stats = append(stats, fmt.Sprintf("%-10s %s", w.name(), st))
		vs = append(vs, wvs...)
	}
	res.violations = len(vs)
	t.Logf("seed %d: %d operations (%d ok), %d faults injected (%s), %d compactions, %d etcd events recorded, %d violations, %v\n\t%s",
		seed, res.ops, res.okOps, res.faults, res.kinds(), res.compactions, len(events), len(vs), since(begin), strings.Join(stats, "\n\t"))
	if os.Getenv("CONCORD_FAULT_DUMP") != "" {
		for _, o := range ops {
			t.Logf("%s", o)
		}
	}
	if len(vs) > 0 {
		var b strings.Builder
		replay := fmt.Sprintf("%s=%d go test -race -run 'TestFaults$' ./faults/", envSeed, seed)
		if bin != "" {
			replay = fmt.Sprintf("%s=%s %s=%d go test -race -run 'TestProcessFaults$' ./faults/", embedtest.BinaryEnv, bin, envSeed, seed)
		}
		fmt.Fprintf(&b, "seed %d: %d violations (replay: %s)\nschedule:\n", seed, len(vs), replay)
		for _, in := range done {
			fmt.Fprintf(&b, "\t%s\n", in)
		}
		b.WriteString("violations:\n")
		for i, v := range vs {
			if i == 20 {
				fmt.Fprintf(&b, "\t... and %d more\n", len(vs)-i)
				break
			}
			fmt.Fprintf(&b, "\t%s\n", v)
		}
		if e.pc != nil {
			b.WriteString(memberLogs(e.pc))
		}
		t.Error(b.String())
	}
	return res
}

// workloads are the recipes of one run: the first seven always, and two of
// the four added later (barrier, counter, multi-lock, rollout), chosen by
// the seed's parity so that consecutive seeds cover all four: on a 2-core
// machine all eleven at once outrun the liveness bound. With
// CONCORD_FAULT_ALL=1 every run has all eleven. TestProcessFaults runs the
// same workloads (processes is kept for a workload that would need to
// differ). The rollout workload was once left out of it: a 3.6.17 soak
// counted 7 liveness violations, every one in a run whose rollout had done
// all its 120 targets (etcd processes are faster than embedded members),
// not a stuck recovery (issue #17); it now has targets for its run's length.
func workloads(seed int64, processes bool) []workload {
	wls := []workload{&lockWL{}, &semWL{}, &electionWL{}, &queueWL{}, &ckWL{}, &discWL{}, &psWL{}}
	switch {
	case os.Getenv(envAll) != "":
		return append(wls, &dbWL{}, &ctWL{}, &mlWL{}, &roWL{})
	case seed%2 == 0:
		return append(wls, &dbWL{}, &mlWL{})
	default:
		return append(wls, &ctWL{}, &roWL{})
	}
}

// waitGroup waits for wg at most d and reports whether it finished.
func waitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

// concordStacks returns the stacks of goroutines in concord code.
func concordStacks() string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "concordkit/concord/") && !strings.Contains(g, "concordStacks") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// memberLogs is what the members of a process cluster logged about leases
// and leadership (they log warnings and errors only), the last lines of
// each, for a failed run's report.
func memberLogs(pc *embedtest.ProcessCluster) string {
	var b strings.Builder
	for i := range 3 {
		data, err := os.ReadFile(pc.LogPath(i))
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "lease") || strings.Contains(l, "leader") {
				lines = append(lines, l)
			}
		}
		fmt.Fprintf(&b, "member %d's log, lines on leases and leaders (last 40 of %d):\n", i, len(lines))
		for _, l := range lines[max(0, len(lines)-40):] {
			fmt.Fprintf(&b, "\t%s\n", l)
		}
	}
	return b.String()
}
