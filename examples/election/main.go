// Command election shows a leader-only worker with election.Elector: three
// replicas campaign; the leader runs the scheduler, whose writes are fenced
// by its term. The first leader shuts down gracefully (its work drains, then
// it resigns) and the next takes over; that leader then crashes (its lease
// is revoked), its work is cancelled, the last replica takes over, and the
// crashed leader's late write is refused. With ETCD_ENDPOINTS unset it runs
// an embedded etcd.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	if err := runTo(context.Background(), say); err != nil {
		log.Fatal(err)
	}
}

type term struct {
	name string
	l    *election.Leadership
}

func runTo(ctx context.Context, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, closeFn, err := embedtest.Connect()
	if err != nil {
		return err
	}
	defer closeFn()

	const name = "demo/scheduler"
	elected := make(chan term, 3)
	type replica struct {
		stop context.CancelFunc
		done chan error
	}
	replicas := map[string]*replica{}
	defer func() {
		for _, r := range replicas {
			r.stop()
			<-r.done
		}
	}()
	for i := range 3 {
		id := fmt.Sprintf("replica-%d", i+1)
		el, err := election.NewElector(c, election.Config{
			Name:  name,
			Value: id,
			OnElected: func(ctx context.Context, l *election.Leadership) {
				elected <- term{id, l}
				// The leader-only work: fenced writes until the term ends.
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-ctx.Done():
						say("%s stops scheduling: %v", id, context.Cause(ctx))
						return
					case <-tick.C:
						_, _ = l.Guard().Do(ctx, clientv3.OpPut(name+"/owner", id))
					}
				}
			},
			SessionOptions: []concurrency.SessionOption{concurrency.WithTTL(2 * time.Second)},
		})
		if err != nil {
			return err
		}
		rctx, stop := context.WithCancel(ctx)
		r := &replica{stop: stop, done: make(chan error, 1)}
		replicas[id] = r
		go func() { r.done <- el.Run(rctx) }()
	}
	next := func() (term, error) {
		select {
		case t := <-elected:
			say("%s leads (term token %d)", t.name, t.l.Token())
			return t, nil
		case <-ctx.Done():
			return term{}, ctx.Err()
		}
	}

	first, err := next()
	if err != nil {
		return err
	}
	// Graceful: the replica shuts down; Run resigns only after OnElected
	// has returned, so the next leader never overlaps the draining work.
	say("%s shuts down", first.name)
	replicas[first.name].stop()
	<-replicas[first.name].done
	delete(replicas, first.name)
	second, err := next()
	if err != nil {
		return err
	}

	// Crash: the leader's lease disappears (as when its process dies and
	// the TTL runs out). Its work is cancelled and the last replica leads.
	say("%s crashes", second.name)
	cur, err := election.CurrentLeader(ctx, c, name)
	if err != nil {
		return err
	}
	if _, err := c.Revoke(ctx, cur.Lease); err != nil {
		return err
	}
	third, err := next()
	if err != nil {
		return err
	}
	<-second.l.Done()
	if _, err := second.l.Guard().Do(ctx, clientv3.OpPut(name+"/owner", second.name)); !errors.Is(err, concurrency.ErrNotHeld) {
		return fmt.Errorf("stale leader's write: %v, want ErrNotHeld", err)
	}
	say("%s's late write refused: it no longer leads", second.name)
	if !(first.l.Token() < second.l.Token() && second.l.Token() < third.l.Token()) {
		return fmt.Errorf("tokens not increasing: %d %d %d", first.l.Token(), second.l.Token(), third.l.Token())
	}
	// The new leader's first fenced write lands within a tick.
	for {
		owner, err := c.Get(ctx, name+"/owner")
		if err != nil {
			return err
		}
		if len(owner.Kvs) > 0 && string(owner.Kvs[0].Value) == third.name {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("scheduler owner is not the current leader: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	say("scheduler owner in etcd: %s", third.name)
	return nil
}
