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

func ExampleMulti() {
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

	// Move stock between two warehouses: hold both locks as one. Any order
	// of names is fine: every Multi takes its locks in the same order.
	m, err := lock.NewMulti(s, []string{"stock/berlin", "stock/austin"})
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	// One guard covers both locks: the write lands only while both are held.
	_, err = m.Guard().Do(ctx,
		clientv3.OpPut("stock/austin/count", "9"),
		clientv3.OpPut("stock/berlin/count", "11"))
	fmt.Println("moved:", err == nil, "locks:", m.Names(), "one token each:", m.TokenOf("stock/austin") != m.TokenOf("stock/berlin"))
	if err := m.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: moved: true locks: [stock/austin stock/berlin] one token each: true
}
