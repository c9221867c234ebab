package rollout_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/rollout"
)

// A worker cut off from etcd mid-step (its connection blackholed, the
// process alive) holds the only slot; its lease expires, another worker
// takes the target over and resumes it at the step that was not
// checkpointed, under a higher token, and the rollout finishes. The
// cut-off worker's step sees its context end (the claim lost), not an
// abort.
func TestRolloutWorkerCutOffMidStep(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const ttl = 2 * time.Second
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(3, 0, 3, 1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	proxy, cut := embedtest.NewProxyClient(t, srv.Endpoints[0])

	type run struct {
		worker, target string
		step           int
		token          concurrency.Token
	}
	var mu sync.Mutex
	var runs []run
	record := func(worker string, s rollout.Step) {
		mu.Lock()
		runs = append(runs, run{worker, s.Target.ID, s.Index, s.Token})
		mu.Unlock()
	}
	stuck := make(chan struct{})
	cause := make(chan error, 1)
	cutStep := func(ctx context.Context, s rollout.Step) error {
		record("cut", s)
		if s.Index == 1 {
			close(stuck)
			<-ctx.Done() // cut off here
			cause <- context.Cause(ctx)
			return ctx.Err()
		}
		return nil
	}
	okStep := func(ctx context.Context, s rollout.Step) error {
		record("ok", s)
		return nil
	}
	opts := rollout.WithSessionOptions(concurrency.WithTTL(ttl))
	cw, err := rollout.NewWorker(cut, "deploy", cutStep, rollout.WithValue("cut"), opts)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stopCut := context.WithCancel(ctx)
	cutDone := make(chan error, 1)
	go func() { cutDone <- cw.Run(cctx) }()
	defer func() { stopCut(); <-cutDone }()
	select {
	case <-stuck:
	case <-ctx.Done():
		t.Fatal("the worker never reached step 1")
	}
	proxy.Blackhole()
	defer proxy.Unblackhole()
	cutAt := time.Now()

	// The others start only now: the target in progress is the cut-off
	// worker's, and it holds the only slot.
	wait := start(ctx, t, srv.Client, "deploy", okStep, 1, 1)
	select {
	case err := <-cause:
		if err == nil || errors.Is(err, rollout.ErrAborted) {
			t.Errorf("the cut-off step's context ended with cause %v, want the claim's loss", err)
		}
	case <-time.After(4 * ttl):
		t.Error("the cut-off worker's step context did not end within 4 TTLs")
	}
	for _, err := range wait() {
		if err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(cutAt)
	t.Logf("the rollout finished %v after its worker was cut off (TTL %v)", took, ttl)

	mu.Lock()
	defer mu.Unlock()
	var cutTarget string
	var cutToken concurrency.Token
	for _, r := range runs {
		if r.worker == "cut" {
			cutTarget, cutToken = r.target, r.token
		}
	}
	var resumed []int
	for _, r := range runs {
		if r.worker == "ok" && r.target == cutTarget {
			resumed = append(resumed, r.step)
			if r.token <= cutToken {
				t.Errorf("the takeover's token %d is not above the cut-off worker's %d", r.token, cutToken)
			}
		}
	}
	if len(resumed) != 2 || resumed[0] != 1 || resumed[1] != 2 {
		t.Errorf("%s was resumed with steps %v, want [1 2] (step 0 was checkpointed)", cutTarget, resumed)
	}
	st, err := rollout.Inspect(ctx, srv.Client, "deploy")
	if err != nil || st.State != rollout.Done {
		t.Fatalf("after the takeover: state %s (%v)", st.State, err)
	}
}
