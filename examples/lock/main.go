// Command lock shows concord's Mutex: workers on their own sessions take
// turns on one lock, each writing a fenced record of its turn; then one
// worker's lease is revoked while it holds the lock, and its hold is lost
// before the next worker takes over. With ETCD_ENDPOINTS unset it runs an
// embedded etcd.
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	if err := runTo(context.Background(), say); err != nil {
		log.Fatal(err)
	}
}

func runTo(ctx context.Context, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, closeFn, err := embedtest.Connect()
	if err != nil {
		return err
	}
	defer closeFn()

	// Three workers take turns; each turn is recorded with a fenced write
	// that lands only while the worker still holds the lock.
	const workers, turns = 3, 3
	type result struct {
		worker string
		token  concurrency.Token
		err    error
	}
	results := make(chan result, workers*turns)
	var sessions []*concurrency.Session
	defer func() {
		for _, s := range sessions {
			_ = s.Close(context.Background())
		}
	}()
	for i := range workers {
		s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(5*time.Second))
		if err != nil {
			return err
		}
		sessions = append(sessions, s)
		name := fmt.Sprintf("worker-%d", i+1)
		go func() {
			m, err := lock.NewMutex(s, "demo/report", lock.WithValue(name))
			for range turns {
				if err == nil {
					err = m.Lock(ctx)
				}
				if err == nil {
					_, err = m.Guard().Do(ctx, clientv3.OpPut("demo/report-owner", name))
					results <- result{name, m.Token(), err}
					err = m.Unlock(ctx)
					continue
				}
				results <- result{name, 0, err}
			}
		}()
	}
	var last concurrency.Token
	for range workers * turns {
		r := <-results
		if r.err != nil {
			return r.err
		}
		if r.token <= last {
			return fmt.Errorf("token %d not above %d", r.token, last)
		}
		last = r.token
		say("%s holds the lock (fencing token %d)", r.worker, r.token)
	}

	// Failover: revoke the holder's lease; its Done closes and the waiter
	// takes over with a higher token. The stale holder's write is refused.
	a, err := lock.NewMutex(sessions[0], "demo/failover", lock.WithValue("worker-1"))
	if err != nil {
		return err
	}
	b, err := lock.NewMutex(sessions[1], "demo/failover", lock.WithValue("worker-2"))
	if err != nil {
		return err
	}
	if err := a.Lock(ctx); err != nil {
		return err
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx) }()
	if _, err := c.Revoke(ctx, sessions[0].Lease()); err != nil {
		return err
	}
	<-a.Done()
	say("worker-1 lost its hold: %v", a.Err())
	if err := <-got; err != nil {
		return err
	}
	say("worker-2 took over (token %d > %d)", b.Token(), a.Token())
	if _, err := a.Guard().Do(ctx, clientv3.OpPut("demo/report-owner", "worker-1")); err != nil {
		say("worker-1's late write refused: %v", err)
	} else {
		return fmt.Errorf("stale write landed")
	}
	return b.Unlock(ctx)
}
