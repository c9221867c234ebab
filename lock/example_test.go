package lock_test

import (
	"context"
	"fmt"
	"log"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func Example() {
	srv, err := embedtest.New() // or clientv3.New with your cluster's endpoints
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

	m, err := lock.NewMutex(s, "jobs/nightly-report", lock.WithValue("worker-1"))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	// Write only while still holding the lock: a stale holder's write fails.
	if _, err := m.Guard().Do(ctx, clientv3.OpPut("reports/last", "done")); err != nil {
		log.Fatal(err)
	}
	st, _ := lock.Inspect(ctx, srv.Client, "jobs/nightly-report")
	fmt.Println("held by:", st.Holders[0].Value, "token matches:", st.Holders[0].Token == m.Token())
	if err := m.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: held by: worker-1 token matches: true
}

func ExampleMutex_Do() {
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

	m, err := lock.NewMutex(s, "migrations")
	if err != nil {
		log.Fatal(err)
	}
	err = m.Do(ctx, func(ctx context.Context) error {
		// ctx is cancelled if the lock is lost while this runs.
		fmt.Println("migrating under the lock")
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// migrating under the lock
	// err: <nil>
}
