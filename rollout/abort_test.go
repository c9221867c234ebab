package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/rollout"
)

// Abort cancels the steps in progress at once, with ErrAborted as their
// context's cause; no later step runs and the workers' Run returns
// ErrAborted.
func TestRolloutAbortCancelsRunningStep(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const k = 2
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(4, 0, 3, k, 0, 0)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ran []string
	started := make(chan struct{}, 8)
	causes := make(chan error, 8)
	fn := func(ctx context.Context, s rollout.Step) error {
		mu.Lock()
		ran = append(ran, fmt.Sprintf("%s/%d", s.Target.ID, s.Index))
		mu.Unlock()
		if s.Index == 0 {
			return nil
		}
		// Step 1 runs until its context ends: a long step.
		started <- struct{}{}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	wait := start(wctx, t, srv.Client, "deploy", fn, k, 1)
	for range k { // both workers are in a long step
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("the workers did not reach step 1")
		}
	}
	aborted := time.Now()
	if err := rollout.Abort(ctx, srv.Client, "deploy", "bad build"); err != nil {
		t.Fatal(err)
	}
	for range k {
		select {
		case cause := <-causes:
			if !errors.Is(cause, rollout.ErrAborted) {
				t.Errorf("the step's context ended with cause %v, want ErrAborted", cause)
			}
		case <-time.After(10 * time.Second):
			stop()
			wait()
			t.Fatal("Abort did not cancel the steps in progress within 10s")
		}
	}
	t.Logf("steps cancelled %v after Abort returned", time.Since(aborted))
	for _, err := range wait() {
		if !errors.Is(err, rollout.ErrAborted) {
			t.Errorf("Run after Abort = %v, want ErrAborted", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range ran {
		if r[len(r)-1] == '2' {
			t.Errorf("step %s ran after the abort (steps run: %v)", r, ran)
		}
	}
	st, err := rollout.Inspect(ctx, srv.Client, "deploy")
	if err != nil || st.State != rollout.Aborted || st.Reason != "bad build" {
		t.Fatalf("after Abort: %+v %v", st, err)
	}
	for _, ts := range st.Targets {
		if ts.State == rollout.TargetDone || ts.State == rollout.TargetInFlight {
			t.Errorf("target %s is %s after the abort", ts.ID, ts.State)
		}
	}
}

// A step that completes as the rollout is aborted keeps its checkpoint.
func TestRolloutAbortKeepsCompletedStep(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(1, 0, 3, 1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	fn := func(ctx context.Context, s rollout.Step) error {
		if s.Index == 1 {
			close(started)
			<-ctx.Done() // completes anyway: its side effect was made
		}
		return nil
	}
	wait := start(ctx, t, srv.Client, "deploy", fn, 1, 0)
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the worker did not reach step 1")
	}
	if err := rollout.Abort(ctx, srv.Client, "deploy", "stop"); err != nil {
		t.Fatal(err)
	}
	for _, err := range wait() {
		if !errors.Is(err, rollout.ErrAborted) {
			t.Errorf("Run after Abort = %v, want ErrAborted", err)
		}
	}
	st, err := rollout.Inspect(ctx, srv.Client, "deploy")
	if err != nil || st.Targets[0].LastStep != 1 || st.Targets[0].State != rollout.TargetWaiting {
		t.Fatalf("after Abort: %+v %v, want step 1 checkpointed", st.Targets, err)
	}
}
