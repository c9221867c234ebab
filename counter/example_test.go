package counter_test

import (
	"context"
	"fmt"
	"log"

	"github.com/concordkit/concord/counter"
	"github.com/concordkit/concord/embedtest"
)

func Example() {
	srv, err := embedtest.New() // or clientv3.New with your cluster's endpoints
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	hosts, err := counter.New(srv.Client, "rollout/hosts-done")
	if err != nil {
		log.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w := hosts.Watch(wctx, 0) // the current value, then every change
	fmt.Println("watch:", (<-w.C()).N)

	v, _ := hosts.Add(ctx, 2)
	fmt.Println("added:", v.N)
	_, swapped, _ := hosts.CompareAndSwap(ctx, 2, 10)
	fmt.Println("swapped 2 -> 10:", swapped)
	_, swapped, _ = hosts.CompareAndSwap(ctx, 2, 20)
	fmt.Println("swapped 2 -> 20:", swapped)
	fmt.Println("watch:", (<-w.C()).N, (<-w.C()).N)
	// Output:
	// watch: 0
	// added: 2
	// swapped 2 -> 10: true
	// swapped 2 -> 20: false
	// watch: 2 10
}
