package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A session is a lease kept alive from one goroutine. Keys put under its
// lease live as long as the session: Close revokes the lease and etcd
// deletes them; a crashed process's keys go when the lease expires.
func ExampleNewSession() {
	srv, err := embedtest.New() // or clientv3.New with your cluster's endpoints
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, "workers/w1", "alive", clientv3.WithLease(s.Lease())); err != nil {
		log.Fatal(err)
	}
	fmt.Println("ttl:", s.TTL())
	select {
	case <-s.Done(): // closed when the lease is lost or the session closed
		log.Fatal(s.Err())
	default:
		fmt.Println("session live")
	}

	if err := s.Close(ctx); err != nil {
		log.Fatal(err)
	}
	resp, err := srv.Client.Get(ctx, "workers/w1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("keys left after Close:", resp.Count)
	fmt.Println("why done:", s.Err())
	// Output:
	// ttl: 5s
	// session live
	// keys left after Close: 0
	// why done: concurrency: session closed
}

// Supervise runs a long-lived role with a fresh session each time the one
// under it is lost. Here the first session's lease is revoked (as when etcd
// expires it during a network partition); the function is cancelled with
// the session's error (ErrLeaseExpired) as its cause and run again on a new
// session.
func ExampleSupervise() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	runs := 0
	err = concurrency.Supervise(ctx, srv.Client, func(ctx context.Context, s *concurrency.Session) error {
		runs++
		fmt.Printf("run %d: registered\n", runs)
		if runs == 1 {
			// Lose the lease: the server forgets it. Not with ctx: the
			// session can see its lease gone, and end ctx, before
			// Revoke's answer arrives.
			if _, err := srv.Client.Revoke(context.WithoutCancel(ctx), s.Lease()); err != nil {
				return err
			}
			<-ctx.Done()
			fmt.Printf("run %d: stopped: %v\n", runs, context.Cause(ctx))
			return ctx.Err()
		}
		return nil // done: Supervise returns nil
	}, concurrency.WithTTL(5*time.Second))
	fmt.Println("supervise returned:", err)
	// Output:
	// run 1: registered
	// run 1: stopped: concurrency: lease expired or revoked
	// run 2: registered
	// supervise returned: <nil>
}

// A Guard makes a write conditional on still holding a resource: here a
// lock's key is deleted by someone else (an operator, a newer holder), and
// the stale holder's write is refused with ErrNotHeld instead of landing.
func ExampleGuard() {
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

	m, err := lock.NewMutex(s, "jobs/report")
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	g := m.Guard()
	if _, err := g.Do(ctx, clientv3.OpPut("reports/last", "by worker-1")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("write while held: ok")

	// The lock's key goes: the hold is lost.
	st, err := lock.Inspect(ctx, srv.Client, "jobs/report")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := srv.Client.Delete(ctx, st.Holders[0].Key); err != nil {
		log.Fatal(err)
	}
	<-m.Done()
	fmt.Println("lost, key deleted:", errors.Is(m.Err(), concurrency.ErrKeyDeleted))
	_, err = g.Do(ctx, clientv3.OpPut("reports/last", "by worker-1, late"))
	fmt.Println("stale write refused:", errors.Is(err, concurrency.ErrNotHeld))
	resp, err := srv.Client.Get(ctx, "reports/last")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("reports/last = %s\n", resp.Kvs[0].Value)
	// Output:
	// write while held: ok
	// lost, key deleted: true
	// stale write refused: true
	// reports/last = by worker-1
}

// Do runs work under any held resource (a lock here; a leadership, a permit
// or a queue claim the same way): the work's context ends if the resource
// is lost, and the resource is released after the work returns.
func ExampleDo() {
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

	m, err := lock.NewMutex(s, "jobs/migrate")
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	err = concurrency.Do(ctx, m, func(ctx context.Context) error {
		fmt.Println("migrating, token > 0:", m.Token() > 0)
		return nil
	})
	fmt.Println("done:", err, "then:", m.Err())
	// Output:
	// migrating, token > 0: true
	// done: <nil> then: concurrency: released
}
