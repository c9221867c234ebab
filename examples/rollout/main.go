// Command rollout shows a rollout limiter with semaphore: eight hosts
// upgrade with at most two in progress at once; once two are done, an
// operator raises the limit to three and a waiting host is admitted at
// once. Each host records its progress with writes fenced by its permit.
// With ETCD_ENDPOINTS unset it runs an embedded etcd.
package main

import (
	"context"
	"fmt"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	if err := runTo(context.Background(), say); err != nil {
		log.Fatal(err)
	}
}

const (
	name  = "demo/rollout/v2"
	hosts = 8
)

func runTo(ctx context.Context, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, closeFn, err := embedtest.Connect()
	if err != nil {
		return err
	}
	defer closeFn()

	// The limit is stored in etcd and outlives this run: a run before this
	// one left 3. Start from this rollout's own limit, as an operator
	// configuring a rollout would.
	if err := setLimit(ctx, c, 2); err != nil {
		return err
	}
	var inFlight, maxSeen, finished atomic.Int64
	var limit atomic.Int64
	limit.Store(2)
	errs := make(chan error, hosts)
	var wg sync.WaitGroup
	for i := range hosts {
		host := fmt.Sprintf("web-%d", i+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- upgrade(ctx, c, host, func(ctx context.Context, p *semaphore.Permit) error {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				if n > limit.Load() {
					return fmt.Errorf("%d hosts in flight, limit %d", n, limit.Load())
				}
				maxSeen.Store(max(maxSeen.Load(), n))
				say("%s upgrading (%d in flight)", host, n)
				for step := 1; step <= 3; step++ {
					time.Sleep(30 * time.Millisecond) // the upgrade's work
					// Progress lands only while the permit is held.
					if _, err := p.Guard().Do(ctx, clientv3.OpPut(name+"/hosts/"+host, fmt.Sprintf("step %d/3", step))); err != nil {
						return err
					}
				}
				say("%s done", host)
				finished.Add(1)
				return nil
			})
		}()
	}

	allDone := make(chan struct{})
	go func() { wg.Wait(); close(errs); close(allDone) }()

	// Once two hosts are done, an operator raises the limit (as `concord
	// sem` or a dashboard would): a waiting host is admitted at once,
	// without anyone releasing.
	raised := false
	for !raised {
		select {
		case <-allDone:
			raised = true // everything ended early (an error): report it
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
			if finished.Load() >= 2 {
				limit.Store(3)
				if err := setLimit(ctx, c, 3); err != nil {
					return err
				}
				say("limit raised to 3")
				raised = true
			}
		}
	}
	<-allDone
	for err := range errs {
		if err != nil {
			return err
		}
	}
	st, err := semaphore.Inspect(ctx, c, name)
	if err != nil {
		return err
	}
	say("all %d hosts upgraded; at most %d at once; %d permits left held", finished.Load(), maxSeen.Load(), len(st.Holders))
	return nil
}

// upgrade is one host: its own session (its process's lease), a permit
// for the duration of fn.
func upgrade(ctx context.Context, c *clientv3.Client, host string, fn func(context.Context, *semaphore.Permit) error) error {
	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(5*time.Second))
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	// WithFollowLimit: take the limit stored in etcd, which may have been
	// changed since this host was configured.
	sem, err := semaphore.New(s, name, 2, semaphore.WithValue(host), semaphore.WithFollowLimit())
	if err != nil {
		return err
	}
	defer sem.Close(context.Background())
	p, err := sem.Acquire(ctx)
	if err != nil {
		return err
	}
	defer p.Release(context.Background())
	return fn(ctx, p)
}

// setLimit stores the semaphore's limit, whatever it was.
func setLimit(ctx context.Context, c *clientv3.Client, n int) error {
	s, err := concurrency.NewSession(ctx, c)
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	sem, err := semaphore.New(s, name, n, semaphore.WithFollowLimit())
	if err != nil {
		return err
	}
	defer sem.Close(context.Background())
	return sem.SetLimit(ctx, n)
}
