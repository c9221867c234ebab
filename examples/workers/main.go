// Command workers shows queue workers with checkpoints: two workers claim
// reindexing tasks from a queue, save each task's progress after every step
// (fenced by the claim), and ack a finished task together with removing its
// checkpoint. One worker crashes mid-task: its late save is refused, the
// task is delivered again, and the other worker resumes it from the last
// saved step instead of starting over. With ETCD_ENDPOINTS unset it runs an
// embedded etcd.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strconv"
	"sync"
	"time"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	if err := runTo(context.Background(), say); err != nil {
		log.Fatal(err)
	}
}

const (
	tasks = 4
	steps = 5
)

// ledger records every step done, to check that no step was skipped and
// that resumed tasks did not start over.
type ledger struct {
	mu   sync.Mutex
	done map[string][]int
}

func (l *ledger) add(task string, step int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done[task] = append(l.done[task], step)
}

func runTo(ctx context.Context, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, closeFn, err := embedtest.Connect()
	if err != nil {
		return err
	}
	defer closeFn()

	q, err := queue.New(c, "demo/reindex")
	if err != nil {
		return err
	}
	for i := range tasks {
		if _, err := q.Enqueue(ctx, []byte(fmt.Sprintf("demo/shard-%d", i+1))); err != nil {
			return err
		}
	}
	led := &ledger{done: map[string][]int{}}
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i, crashAt := range []int{2, 0} { // worker-1 crashes during step 2 of its first task
		name := fmt.Sprintf("worker-%d", i+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- work(wctx, c, q, name, crashAt, led, say)
		}()
	}
	// Wait until the queue is drained, then stop the workers.
	for {
		n, err := q.Len(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		select {
		case err := <-errs:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	stopWorkers()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for i := range tasks {
		task := fmt.Sprintf("demo/shard-%d", i+1)
		got := led.done[task]
		for s := 1; s <= steps; s++ {
			if !contains(got, s) {
				return fmt.Errorf("%s: step %d never done (%v)", task, s, got)
			}
		}
		if len(got) > steps+1 {
			return fmt.Errorf("%s: %d steps done for %d: started over", task, len(got), steps)
		}
	}
	say("all %d tasks done, every step at least once, none started over", tasks)
	return nil
}

// work claims tasks until ctx ends. If crashAt > 0, the worker's process
// "dies" (its lease is revoked) after that step of its first task.
func work(ctx context.Context, c *clientv3.Client, q *queue.Queue, name string, crashAt int, led *ledger, say func(string, ...any)) error {
	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(2*time.Second))
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	for {
		claim, err := q.Consumer(s).Claim(ctx)
		if err != nil {
			return err
		}
		task := string(claim.Payload())
		saver, prog, err := checkpoint.Open(ctx, c, task, claim.Guard())
		if err != nil {
			return err
		}
		step := 0
		if prog.Revision != 0 {
			step, _ = strconv.Atoi(string(prog.Data))
			say("%s resumes %s after step %d (delivery %d)", name, task, step, claim.Attempts())
		} else {
			say("%s starts %s", name, task)
		}
		for step < steps {
			step++
			time.Sleep(10 * time.Millisecond) // the step's work
			led.add(task, step)
			if step == crashAt {
				// The process dies: its lease goes, and with it the claim.
				_, _ = c.Revoke(ctx, s.Lease())
				<-claim.Done()
			}
			if _, err := saver.Save(ctx, []byte(strconv.Itoa(step))); err != nil {
				if errors.Is(err, checkpoint.ErrNotHeld) {
					say("%s crashed; its save of %s step %d was refused", name, task, step)
					return nil
				}
				return err
			}
		}
		if err := claim.Ack(ctx, checkpoint.DeleteOp(task)); err != nil {
			return err
		}
		say("%s finished %s", name, task)
	}
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
