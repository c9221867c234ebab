package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/rollout"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fleet records what a rollout's step functions did.
type fleet struct {
	mu       sync.Mutex
	runs     map[string][]int // target -> steps run, in order
	inFlight map[string]bool  // targets between their first and last step
	maxIn    int
	ended    map[string]time.Time // target -> when its last step ended
	started  map[string]time.Time // target -> when its first step began
	fail     map[string]bool      // targets whose step fails
	steps    int
}

func newFleet(steps int) *fleet {
	return &fleet{runs: map[string][]int{}, inFlight: map[string]bool{}, ended: map[string]time.Time{}, started: map[string]time.Time{}, fail: map[string]bool{}, steps: steps}
}

func (f *fleet) step(ctx context.Context, s rollout.Step) error {
	f.mu.Lock()
	if _, ok := f.started[s.Target.ID]; !ok {
		f.started[s.Target.ID] = time.Now()
	}
	f.inFlight[s.Target.ID] = true
	f.maxIn = max(f.maxIn, len(f.inFlight))
	f.runs[s.Target.ID] = append(f.runs[s.Target.ID], s.Index)
	fail := f.fail[s.Target.ID]
	f.mu.Unlock()
	select { // some work
	case <-time.After(5 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fail || s.Index == f.steps-1 {
		delete(f.inFlight, s.Target.ID)
		f.ended[s.Target.ID] = time.Now()
	}
	if fail {
		return errors.New("step failed")
	}
	return nil
}

// start runs workers and coordinators until ctx ends or they return; the
// returned func waits for them and returns their errors.
func start(ctx context.Context, t *testing.T, c *clientv3.Client, name string, fn rollout.StepFunc, workers, coordinators int) func() []error {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range workers {
		w, err := rollout.NewWorker(c, name, fn, rollout.WithValue(fmt.Sprint("worker-", i)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			err := w.Run(ctx)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	for i := range coordinators {
		co, err := rollout.NewCoordinator(c, name, rollout.WithValue(fmt.Sprint("coordinator-", i)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			err := co.Run(ctx)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	return func() []error { wg.Wait(); return errs }
}

func plan(targets, canaries, steps, k, wave, budget int) rollout.Plan {
	p := rollout.Plan{MaxInFlight: k, WaveSize: wave, FailureBudget: budget}
	for i := range targets {
		p.Targets = append(p.Targets, rollout.Target{ID: fmt.Sprint("host-", i), Canary: i < canaries})
	}
	for i := range steps {
		p.Steps = append(p.Steps, fmt.Sprint("step-", i))
	}
	return p
}

// Every step of every target runs exactly once, at most K targets at once,
// canaries first and each wave only after the previous one ended.
func TestRolloutRunsEveryTargetOnceInWaves(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	p := plan(7, 1, 3, 2, 3, 0)
	if err := rollout.Create(ctx, srv.Client, "deploy", p); err != nil {
		t.Fatal(err)
	}
	if err := rollout.Create(ctx, srv.Client, "deploy", p); err != nil {
		t.Fatalf("Create again with the same plan: %v", err)
	}
	other := p
	other.MaxInFlight = 5
	if err := rollout.Create(ctx, srv.Client, "deploy", other); !errors.Is(err, rollout.ErrPlanMismatch) {
		t.Fatalf("Create with another plan = %v", err)
	}
	f := newFleet(3)
	wait := start(ctx, t, srv.Client, "deploy", f.step, 3, 2)
	for _, err := range wait() {
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	}
	for _, tg := range p.Targets {
		if got := fmt.Sprint(f.runs[tg.ID]); got != "[0 1 2]" {
			t.Errorf("%s ran steps %s, want [0 1 2]", tg.ID, got)
		}
	}
	if f.maxIn > p.MaxInFlight {
		t.Errorf("%d targets in flight at once, limit %d", f.maxIn, p.MaxInFlight)
	}
	waves := p.Waves()
	for w := 1; w < len(waves); w++ {
		for _, prev := range waves[w-1] {
			for _, cur := range waves[w] {
				if f.started[cur.ID].Before(f.ended[prev.ID]) {
					t.Errorf("%s (wave %d) began before %s (wave %d) ended", cur.ID, w, prev.ID, w-1)
				}
			}
		}
	}
	st, err := rollout.Inspect(ctx, srv.Client, "deploy")
	if err != nil || st.State != rollout.Done || st.Waves[len(st.Waves)-1].Done != 3 || st.Targets[0].State != rollout.TargetDone {
		t.Fatalf("Inspect = %+v %v", st, err)
	}
}

// A worker that loses its target mid-step is replaced; the replacement
// resumes at the step that was not checkpointed: no completed step runs
// twice, and none is skipped.
func TestRolloutResumesAfterLostWorker(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(1, 0, 4, 1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var runs []int
	var tokens []int64
	stuck := make(chan struct{})
	once := sync.Once{}
	fn := func(ctx context.Context, s rollout.Step) error {
		mu.Lock()
		runs = append(runs, s.Index)
		tokens = append(tokens, int64(s.Token))
		mu.Unlock()
		if s.Index == 2 {
			first := false
			once.Do(func() { first = true })
			if first {
				close(stuck)
				<-ctx.Done() // the worker loses the target here
				return ctx.Err()
			}
		}
		return nil
	}
	wait := start(ctx, t, srv.Client, "deploy", fn, 2, 1)
	<-stuck
	// The holder's session dies: revoke the claim's lease.
	li, err := lock.Inspect(ctx, srv.Client, "deploy/rollout/claims/host-0")
	if err != nil || len(li.Holders) != 1 {
		t.Fatalf("claim: %+v %v", li, err)
	}
	if _, err := srv.Client.Revoke(ctx, li.Holders[0].Lease); err != nil {
		t.Fatal(err)
	}
	for _, err := range wait() {
		if err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(runs) != "[0 1 2 2 3]" {
		t.Fatalf("steps ran %v, want [0 1 2 2 3]", runs)
	}
	if !(tokens[3] > tokens[2]) {
		t.Fatalf("the replacement's token %d is not above the lost worker's %d", tokens[3], tokens[2])
	}
}

// More failures than the budget pause the rollout: no new target is taken;
// Resume goes on where it stopped, forgiving the failures so far.
func TestRolloutFailureBudgetPausesUntilResume(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(5, 0, 1, 1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	f := newFleet(1)
	f.fail["host-0"], f.fail["host-1"] = true, true
	wait := start(ctx, t, srv.Client, "deploy", f.step, 2, 1)
	deadline := time.Now().Add(15 * time.Second)
	var st rollout.Status
	for st.State != rollout.Paused {
		if time.Now().After(deadline) {
			t.Fatalf("not paused: %+v", st)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
		st, _ = rollout.Inspect(ctx, srv.Client, "deploy")
	}
	if st.Failed != 2 || st.Reason == "" {
		t.Fatalf("paused with %+v", st)
	}
	// Paused: nothing more is taken.
	time.Sleep(500 * time.Millisecond) // a span in which nothing may happen
	f.mu.Lock()
	ran := len(f.runs)
	f.mu.Unlock()
	if ran != 2 {
		t.Fatalf("%d targets ran; after the pause none should have started", ran)
	}
	if err := rollout.Resume(ctx, srv.Client, "deploy"); err != nil {
		t.Fatal(err)
	}
	for _, err := range wait() {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, _ = rollout.Inspect(ctx, srv.Client, "deploy")
	if st.State != rollout.Done || st.Failed != 2 || len(f.runs) != 5 {
		t.Fatalf("after resume: %+v, %d targets ran", st, len(f.runs))
	}
	if err := rollout.Pause(ctx, srv.Client, "deploy", "too late"); !errors.Is(err, rollout.ErrFinished) {
		t.Fatalf("Pause of a done rollout = %v", err)
	}
}

func TestRolloutAbort(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(3, 0, 3, 1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	fn := func(ctx context.Context, s rollout.Step) error {
		once.Do(func() { <-release })
		return nil
	}
	wait := start(ctx, t, srv.Client, "deploy", fn, 2, 1)
	if err := rollout.Abort(ctx, srv.Client, "deploy", "bad build"); err != nil {
		t.Fatal(err)
	}
	close(release)
	for _, err := range wait() {
		if !errors.Is(err, rollout.ErrAborted) {
			t.Fatalf("Run after Abort = %v, want ErrAborted", err)
		}
	}
	st, _ := rollout.Inspect(ctx, srv.Client, "deploy")
	if st.State != rollout.Aborted || st.Reason != "bad build" || st.Targets[0].State == rollout.TargetDone {
		t.Fatalf("after Abort: %+v", st)
	}
}

// The coordinator is replaced after a crash (its lease revoked) and the
// waves still open once each, in order, judged from etcd's record of the
// open-wave key.
func TestRolloutCoordinatorFailover(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	p := plan(6, 0, 1, 2, 2, 0)
	if err := rollout.Create(ctx, srv.Client, "deploy", p); err != nil {
		t.Fatal(err)
	}
	resp, _ := srv.Client.Get(ctx, "deploy/rollout/ctl/wave")
	wch := srv.Client.Watch(ctx, "deploy/rollout/ctl/wave", clientv3.WithRev(resp.Header.Revision+1))
	gate := make(chan struct{})
	var once sync.Once
	fn := func(ctx context.Context, s rollout.Step) error {
		if s.Target.ID == "host-2" { // wave 1: hold it until the coordinator crashed
			once.Do(func() { <-gate })
		}
		return nil
	}
	wait := start(ctx, t, srv.Client, "deploy", fn, 2, 2)
	var leader election.Leader
	deadline := time.Now().Add(15 * time.Second)
	for leader.None() {
		if time.Now().After(deadline) {
			t.Fatal("no coordinator elected")
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
		leader, _ = election.CurrentLeader(ctx, srv.Client, "deploy/rollout/coordinator")
	}
	if _, err := srv.Client.Revoke(ctx, leader.Lease); err != nil {
		t.Fatal(err)
	}
	close(gate)
	for _, err := range wait() {
		if err != nil {
			t.Fatal(err)
		}
	}
	var opened []string
	for wr := range wch {
		for _, ev := range wr.Events {
			opened = append(opened, string(ev.Kv.Value))
		}
		if len(opened) >= 2 {
			break
		}
	}
	if fmt.Sprint(opened) != "[1 2]" {
		t.Fatalf("waves opened %v, want [1 2] (each once, in order)", opened)
	}
	st, _ := rollout.Inspect(ctx, srv.Client, "deploy")
	if st.State != rollout.Done {
		t.Fatalf("state %s", st.State)
	}
}

func TestRolloutWatchAndValidation(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	for _, bad := range []rollout.Plan{
		{},
		plan(2, 0, 0, 1, 0, 0),
		plan(2, 0, 1, 0, 0, 0),
		{Targets: []rollout.Target{{ID: "a"}, {ID: "a"}}, Steps: []string{"x"}, MaxInFlight: 1},
		{Targets: []rollout.Target{{ID: "a/b"}}, Steps: []string{"x"}, MaxInFlight: 1},
	} {
		if err := rollout.Create(ctx, srv.Client, "deploy", bad); !errors.Is(err, rollout.ErrInvalidPlan) {
			t.Errorf("Create(%+v) = %v", bad, err)
		}
	}
	if _, err := rollout.Inspect(ctx, srv.Client, "deploy"); !errors.Is(err, rollout.ErrNotFound) {
		t.Fatalf("Inspect of no rollout = %v", err)
	}
	// More targets than etcd takes operations in one transaction.
	big := plan(300, 0, 1, 10, 7, 0)
	if err := rollout.Create(ctx, srv.Client, "big", big); err != nil {
		t.Fatal(err)
	}
	if err := rollout.Create(ctx, srv.Client, "big", big); err != nil {
		t.Fatalf("Create again: %v", err)
	}
	if st, err := rollout.Inspect(ctx, srv.Client, "big"); err != nil || len(st.Targets) != 300 || len(st.Waves) != 43 || st.Waves[42].Waiting != 6 {
		t.Fatalf("big plan: %d targets, %d waves, %v", len(st.Targets), len(st.Waves), err)
	}
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(2, 0, 2, 1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ev, err := rollout.Watch(wctx, srv.Client, "deploy")
	if err != nil {
		t.Fatal(err)
	}
	first := <-ev.C()
	if first.Kind != "snapshot" || first.Status.State != rollout.Running || first.Status.Waves[0].Waiting != 2 {
		t.Fatalf("first event %+v", first)
	}
	f := newFleet(2)
	wait := start(ctx, t, srv.Client, "deploy", f.step, 1, 1)
	sawInFlight := false
	for e := range ev.C() {
		sawInFlight = sawInFlight || e.Status.InFlight > 0
		if e.Kind == "state" && e.Status.State == rollout.Done {
			break
		}
	}
	stop()
	for range ev.C() {
	}
	wait()
	if !sawInFlight {
		t.Fatal("no event showed a target in flight")
	}
}

// WithOnTerm reports each coordinator's term: in office, then out of it
// before the next one takes office when it hands over by stepping down
// (its Run ended; the rollout ended), with tokens increasing.
func TestRolloutCoordinatorOnTerm(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	if err := rollout.Create(ctx, srv.Client, "onterm", plan(4, 0, 1, 2, 2, 0)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log []string
	inOffice, maxIn := 0, 0
	var tokens []concurrency.Token
	elected := make(chan struct{}, 4)
	hook := func(name string) rollout.Option {
		return rollout.WithOnTerm(func(tok concurrency.Token, in bool) {
			mu.Lock()
			defer mu.Unlock()
			if in {
				inOffice++
				maxIn = max(maxIn, inOffice)
				tokens = append(tokens, tok)
				elected <- struct{}{}
			} else {
				inOffice--
			}
			log = append(log, fmt.Sprintf("%s %v", name, in))
		})
	}
	gate := make(chan struct{})
	fn := func(ctx context.Context, s rollout.Step) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var wg sync.WaitGroup
	w, _ := rollout.NewWorker(srv.Client, "onterm", fn)
	wg.Go(func() { _ = w.Run(ctx) })
	actx, stopA := context.WithCancel(ctx)
	a, _ := rollout.NewCoordinator(srv.Client, "onterm", rollout.WithValue("a"), hook("a"))
	wg.Go(func() { _ = a.Run(actx) })
	<-elected // a is in office before b campaigns
	b, _ := rollout.NewCoordinator(srv.Client, "onterm", rollout.WithValue("b"), hook("b"))
	errB := make(chan error, 1)
	wg.Go(func() { errB <- b.Run(ctx) })
	stopA() // a steps down; b takes office
	close(gate)
	if err := <-errB; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(log) != "[a true a false b true b false]" || maxIn != 1 || len(tokens) != 2 || tokens[1] <= tokens[0] {
		t.Fatalf("terms %v, at most %d in office at once, tokens %v", log, maxIn, tokens)
	}
	st, _ := rollout.Inspect(ctx, srv.Client, "onterm")
	if st.State != rollout.Done {
		t.Fatalf("state %s", st.State)
	}
}
