package election_test

import (
	"context"
	"fmt"
	"log"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
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
	e, err := election.New(s, "scheduler")
	if err != nil {
		log.Fatal(err)
	}
	term, err := e.Campaign(ctx, "10.0.0.7:9000")
	if err != nil {
		log.Fatal(err)
	}
	cur, _ := election.CurrentLeader(ctx, srv.Client, "scheduler")
	fmt.Println("leader:", cur.Value, "token matches:", cur.Token == term.Token())
	if err := term.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	_, err = election.CurrentLeader(ctx, srv.Client, "scheduler")
	fmt.Println(err)
	// Output:
	// leader: 10.0.0.7:9000 token matches: true
	// election: no leader
}

func ExampleElector() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())

	el, err := election.NewElector(srv.Client, election.Config{
		Name:  "scheduler",
		Value: "replica-1",
		OnElected: func(ctx context.Context, term *election.Leadership) {
			fmt.Println("leading")
			cancel() // here: stop at once; a real leader works until ctx ends
			<-ctx.Done()
		},
		OnLost: func() { fmt.Println("term over") },
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(el.Run(ctx))
	// Output:
	// leading
	// term over
	// context canceled
}
