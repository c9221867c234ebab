package semaphore_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// At most two hosts of a fleet upgrade at once.
func Example() {
	srv, err := embedtest.New() // or clientv3.New with your cluster's endpoints
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	var permits []*semaphore.Permit
	for _, host := range []string{"web-1", "web-2", "web-3"} {
		s, err := concurrency.NewSession(ctx, srv.Client) // one per host process
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close(ctx)
		sem, err := semaphore.New(s, "rollouts/v42", 2, semaphore.WithValue(host))
		if err != nil {
			log.Fatal(err)
		}
		defer sem.Close(context.Background())
		p, err := sem.TryAcquire(ctx)
		if errors.Is(err, semaphore.ErrNoPermit) {
			fmt.Println(host, "waits")
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		// Record progress only while still holding the permit.
		if _, err := p.Guard().Do(ctx, clientv3.OpPut("rollouts/v42/done/"+host, "upgrading")); err != nil {
			log.Fatal(err)
		}
		permits = append(permits, p)
	}
	st, _ := semaphore.Inspect(ctx, srv.Client, "rollouts/v42")
	fmt.Println("limit", st.Limit, "holders:", st.Holders[0].Value, st.Holders[1].Value)
	for _, p := range permits {
		_ = p.Release(ctx)
	}
	// Output:
	// web-3 waits
	// limit 2 holders: web-1 web-2
}

// The stored limit can change while the semaphore is in use.
func ExampleSemaphore_SetLimit() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	s, err := concurrency.NewSession(ctx, srv.Client)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	sem, _ := semaphore.New(s, "jobs/reindex", 1)
	defer sem.Close(context.Background())
	p1, _ := sem.Acquire(ctx)
	_, err = sem.TryAcquire(ctx)
	fmt.Println("second permit at limit 1:", err)

	if err := sem.SetLimit(ctx, 2); err != nil {
		log.Fatal(err)
	}
	p2, err := sem.TryAcquire(ctx)
	fmt.Println("second permit at limit 2:", err)

	// A process still configured with limit 1 is told, unless it follows
	// the stored limit.
	old, _ := semaphore.New(s, "jobs/reindex", 1)
	defer old.Close(context.Background())
	_, err = old.Acquire(ctx)
	fmt.Println(errors.Is(err, semaphore.ErrLimitMismatch))
	follower, _ := semaphore.New(s, "jobs/reindex", 1, semaphore.WithFollowLimit())
	defer follower.Close(context.Background())
	n, _ := follower.Limit(ctx)
	fmt.Println("follower's limit:", n)

	_ = p1.Release(ctx)
	_ = p2.Release(ctx)
	// Output:
	// second permit at limit 1: semaphore: no permit available
	// second permit at limit 2: <nil>
	// true
	// follower's limit: 2
}
