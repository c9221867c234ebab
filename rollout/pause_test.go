package rollout_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/rollout"
)

// Pause is honoured within one session TTL with every slot busy: from the
// moment Pause returns, no worker starts a new target later than one TTL
// after it, and none under a claim taken after the pause landed (judged by
// the claims' fencing tokens, their create revisions in etcd's record); the
// steps in progress finish, not cancelled. Resume then goes on where it
// stopped and every target runs once.
func TestRolloutPauseHonouredWithinTTL(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const (
		k, workers, targets = 3, 5, 90
		ttl                 = 2 * time.Second
		work                = 150 * time.Millisecond
	)
	if err := rollout.Create(ctx, srv.Client, "deploy", plan(targets, 0, 1, k, 0, 0)); err != nil {
		t.Fatal(err)
	}
	type start struct {
		target string
		at     time.Time
		token  concurrency.Token
	}
	var mu sync.Mutex
	var starts []start
	runs := map[string]int{}
	inFlight, cancelled := 0, 0
	fn := func(ctx context.Context, s rollout.Step) error {
		mu.Lock()
		starts = append(starts, start{s.Target.ID, time.Now(), s.Token})
		runs[s.Target.ID]++
		inFlight++
		mu.Unlock()
		defer func() {
			mu.Lock()
			inFlight--
			mu.Unlock()
		}()
		select {
		case <-time.After(work):
			return nil
		case <-ctx.Done():
			mu.Lock()
			cancelled++
			mu.Unlock()
			return ctx.Err()
		}
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	errs := make(chan error, workers+1)
	opts := rollout.WithSessionOptions(concurrency.WithTTL(ttl))
	for i := range workers {
		w, err := rollout.NewWorker(srv.Client, "deploy", fn, rollout.WithValue(fmt.Sprint("worker-", i)), opts)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { errs <- w.Run(wctx) })
	}
	co, err := rollout.NewCoordinator(srv.Client, "deploy", opts)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { errs <- co.Run(wctx) })

	// Every slot busy, a few targets done.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		busy, n := inFlight, len(starts)
		mu.Unlock()
		if busy == k && n >= 2*k {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never %d targets in flight (%d, %d started)", k, busy, n)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	paused := time.Now()
	if err := rollout.Pause(ctx, srv.Client, "deploy", "operator"); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client.Get(ctx, "deploy/rollout/ctl/state")
	if err != nil {
		t.Fatal(err)
	}
	pauseRev := resp.Kvs[0].ModRevision
	mu.Lock()
	before := len(starts)
	mu.Unlock()
	// Watch for twice the TTL: a span in which only the targets in
	// progress may finish, and at most one TTL of new starts.
	select {
	case <-time.After(2 * ttl):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	mu.Lock()
	latest := starts[len(starts)-1].at // starts are appended in time order
	for _, s := range starts[before:] {
		if int64(s.token) > pauseRev {
			t.Errorf("%s started under a claim taken at rev %d, after the pause at rev %d", s.target, s.token, pauseRev)
		}
	}
	last := latest.Sub(paused)
	afterPause, busy, cut := len(starts)-before, inFlight, cancelled
	mu.Unlock()
	t.Logf("paused with %d in flight; %d targets started after Pause returned; the last start %v after Pause was called (TTL %v)", k, afterPause, last, ttl)
	if last > ttl {
		t.Errorf("a target started %v after Pause returned, more than one TTL (%v)", last, ttl)
	}
	if busy != 0 || cut != 0 {
		t.Errorf("after the pause: %d steps still in progress, %d cancelled; want the ones in progress finished", busy, cut)
	}
	if st, err := rollout.Inspect(ctx, srv.Client, "deploy"); err != nil || st.State != rollout.Paused || st.InFlight != 0 {
		t.Fatalf("paused status: state %s, %d in flight (%v)", st.State, st.InFlight, err)
	}

	if err := rollout.Resume(ctx, srv.Client, "deploy"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != targets {
		t.Fatalf("%d targets ran, want %d", len(runs), targets)
	}
	for id, n := range runs {
		if n != 1 {
			t.Errorf("%s ran %d times", id, n)
		}
	}
	if st, err := rollout.Inspect(ctx, srv.Client, "deploy"); err != nil || st.State != rollout.Done {
		t.Fatalf("after resume: state %s (%v)", st.State, err)
	}
}
