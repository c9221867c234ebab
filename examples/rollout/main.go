// Command rollout shows package rollout on a step function of its own:
// eight hosts upgrade in three steps, with at most two in progress at once,
// the canary first and then waves of four. Three workers and two
// coordinators run it; one worker stops in the middle of a host's upgrade,
// and another worker resumes that host at the step after the last one
// saved. An operator pauses the rollout and resumes it. With
// ETCD_ENDPOINTS unset it runs an embedded etcd.
package main

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/rollout"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	if err := runTo(context.Background(), say); err != nil {
		log.Fatal(err)
	}
}

const name = "demo/upgrade-v2"

func runTo(ctx context.Context, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, closeFn, err := embedtest.Connect()
	if err != nil {
		return err
	}
	defer closeFn()

	// Against a shared cluster a previous run's rollout (and the
	// example's host records) would still be there: start afresh. Only
	// the example's own keys are touched.
	for _, prefix := range []string{name + "/", name + "-hosts/"} {
		if _, err := c.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
			return err
		}
	}

	plan := rollout.Plan{Steps: []string{"drain", "upgrade", "undrain"}, MaxInFlight: 2, WaveSize: 4, FailureBudget: 1}
	for i := range 8 {
		plan.Targets = append(plan.Targets, rollout.Target{ID: fmt.Sprintf("web-%d", i+1), Canary: i == 0})
	}
	if err := rollout.Create(ctx, c, name, plan); err != nil {
		return err
	}
	ectx, stopEvents := context.WithCancel(ctx)
	events, err := rollout.Watch(ectx, c, name)
	if err != nil {
		stopEvents()
		return err
	}
	defer func() {
		stopEvents()
		for range events.C() {
		}
	}()

	// The user's step function: here it records each step with a write
	// fenced by the worker's claim (a stale worker's write fails). The
	// first worker to reach the middle step of a host after the canary
	// stops there, as a crashed process would.
	var mu sync.Mutex
	active := map[string]bool{}
	maxSeen := 0
	ran := map[string][]int{}
	stops := make([]context.CancelFunc, 3)
	var stopOnce sync.Once
	step := func(worker int) rollout.StepFunc {
		return func(ctx context.Context, s rollout.Step) error {
			mu.Lock()
			active[s.Target.ID] = true
			maxSeen = max(maxSeen, len(active))
			ran[s.Target.ID] = append(ran[s.Target.ID], s.Index)
			mu.Unlock()
			crash := false
			if s.Index == 1 && !s.Target.Canary {
				stopOnce.Do(func() { crash = true })
			}
			if crash {
				say("worker-%d stops during %s of %s", worker, s.Name, s.Target.ID)
				mu.Lock()
				delete(active, s.Target.ID) // in flight again once resumed
				mu.Unlock()
				stops[worker]()
				<-ctx.Done()
				return ctx.Err()
			}
			time.Sleep(20 * time.Millisecond) // the step's work
			if _, err := s.Guard.Do(ctx, clientv3.OpPut(name+"-hosts/"+s.Target.ID, s.Name)); err != nil {
				return err
			}
			if s.Index == len(plan.Steps)-1 {
				mu.Lock()
				delete(active, s.Target.ID)
				mu.Unlock()
			}
			return nil
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 3 {
		w, err := rollout.NewWorker(c, name, step(i), rollout.WithValue(fmt.Sprint("worker-", i)))
		if err != nil {
			return err
		}
		wctx, stop := context.WithCancel(ctx)
		stops[i] = stop
		wg.Go(func() {
			defer stop()
			if err := w.Run(wctx); err != nil && wctx.Err() == nil {
				errs <- err
			}
		})
	}
	for i := range 2 {
		co, err := rollout.NewCoordinator(c, name, rollout.WithValue(fmt.Sprint("coordinator-", i)))
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := co.Run(ctx); err != nil {
				errs <- err
			}
		})
	}

	// An operator follows the events, pauses once the first wave after the
	// canary is done, and resumes.
	paused := false
	for ev := range events.C() {
		st := ev.Status
		switch {
		case ev.Kind == "wave":
			say("wave %d opened", st.Wave)
		case ev.Kind == "state" && st.State == rollout.Paused:
			say("paused: %s", st.Reason)
			if err := rollout.Resume(ctx, c, name); err != nil {
				return err
			}
		case ev.Kind == "state":
			say("rollout %s", st.State)
		}
		if !paused && st.Wave == 2 {
			paused = true
			if err := rollout.Pause(ctx, c, name, "operator checks the dashboards"); err != nil {
				return err
			}
		}
		if st.State == rollout.Done {
			break
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	st, err := rollout.Inspect(ctx, c, name)
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	for _, t := range st.Targets {
		if steps := ran[t.ID]; len(steps) > 3 {
			say("%s ran steps %v: resumed at the step that was not saved", t.ID, steps)
		}
	}
	done := 0
	for _, w := range st.Waves {
		done += w.Done
	}
	say("%d of %d hosts done in %d waves; at most %d at once", done, len(st.Targets), len(st.Waves), maxSeen)
	return nil
}
