package barrier_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/concordkit/concord/barrier"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
)

func ExampleBarrier() {
	srv, err := embedtest.New() // or clientv3.New with your cluster's endpoints
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	gate, err := barrier.New(srv.Client, "deploy/wave-2")
	if err != nil {
		log.Fatal(err)
	}
	if err := gate.Hold(ctx); err != nil { // the coordinator closes the gate
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := gate.Wait(ctx); err != nil { // workers block here
				log.Print(err)
			}
		})
	}
	if err := gate.Release(ctx); err != nil { // and wake together here
		log.Fatal(err)
	}
	wg.Wait()
	fmt.Println("every worker passed the gate")
	// Output: every worker passed the gate
}

func ExampleDoubleBarrier() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	const n = 3
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			s, err := concurrency.NewSession(ctx, srv.Client)
			if err != nil {
				results[i] = err
				return
			}
			defer s.Close(ctx)
			d, err := barrier.NewDouble(s, "load-test", n, barrier.WithValue(fmt.Sprint("worker-", i)))
			if err != nil {
				results[i] = err
				return
			}
			defer d.Close(ctx)
			if err := d.Enter(ctx); err != nil { // all n start together
				results[i] = err
				return
			}
			// ... the phase's work ...
			results[i] = d.Leave(ctx) // and finish together
		})
	}
	wg.Wait()
	fmt.Println(results)
	// Output: [<nil> <nil> <nil>]
}
