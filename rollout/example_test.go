package rollout_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/rollout"
)

func Example() {
	srv, err := embedtest.New() // or clientv3.New with your cluster's endpoints
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	plan := rollout.Plan{
		Targets: []rollout.Target{
			{ID: "web-1", Canary: true}, {ID: "web-2"}, {ID: "web-3"}, {ID: "web-4"},
		},
		Steps:         []string{"drain", "upgrade", "undrain"},
		MaxInFlight:   2, // at most 2 hosts at once
		WaveSize:      2, // then waves of 2, each after the previous one
		FailureBudget: 0, // pause at the first failure
	}
	if err := rollout.Create(ctx, srv.Client, "upgrade-v2", plan); err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	upgraded := 0
	step := func(ctx context.Context, s rollout.Step) error {
		// Run s.Name on s.Target.ID here; fence it with s.Token.
		if s.Name == "upgrade" {
			mu.Lock()
			upgraded++
			mu.Unlock()
		}
		return nil
	}
	var wg sync.WaitGroup
	for i := range 3 { // a fleet of workers, and a coordinator
		w, _ := rollout.NewWorker(srv.Client, "upgrade-v2", step, rollout.WithValue(fmt.Sprint("worker-", i)))
		wg.Go(func() { _ = w.Run(ctx) })
	}
	c, _ := rollout.NewCoordinator(srv.Client, "upgrade-v2")
	wg.Go(func() { _ = c.Run(ctx) })
	wg.Wait() // every Run returns once the rollout is done

	st, _ := rollout.Inspect(ctx, srv.Client, "upgrade-v2")
	fmt.Println(st.State, "upgraded:", upgraded, "waves:", len(st.Waves))
	for _, w := range st.Waves {
		fmt.Printf("wave %d: %d done, %d failed\n", w.Wave, w.Done, w.Failed)
	}
	// Output:
	// done upgraded: 4 waves: 3
	// wave 0: 1 done, 0 failed
	// wave 1: 2 done, 0 failed
	// wave 2: 1 done, 0 failed
}
