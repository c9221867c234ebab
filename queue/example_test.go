package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
)

func Example() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	q, err := queue.New(srv.Client, "emails")
	if err != nil {
		log.Fatal(err)
	}
	_, _ = q.Enqueue(ctx, []byte("welcome alice"))
	_, _ = q.Enqueue(ctx, []byte("password reset bob"), queue.WithPriority(5))

	// A consumer claims under its session's lease: if it dies, the item is
	// delivered again.
	s, err := concurrency.NewSession(ctx, srv.Client)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	for range 2 {
		c, err := q.Consumer(s).Claim(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s (delivery %d)\n", c.Payload(), c.Attempts())
		if err := c.Ack(ctx); err != nil {
			log.Fatal(err)
		}
	}
	n, _ := q.Len(ctx)
	fmt.Println("left:", n)
	// Output:
	// password reset bob (delivery 1)
	// welcome alice (delivery 1)
	// left: 0
}

// A worker takes items one after another: AckNext acks each and claims the
// next in one request, and ErrEmpty says the queue is drained (a worker
// that runs on would wait in Claim).
func ExampleClaim_AckNext() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	q, err := queue.New(srv.Client, "thumbnails")
	if err != nil {
		log.Fatal(err)
	}
	for _, img := range []string{"a.png", "b.png", "c.png"} {
		_, _ = q.Enqueue(ctx, []byte(img))
	}
	s, err := concurrency.NewSession(ctx, srv.Client)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	c, err := q.Consumer(s).Claim(ctx)
	for err == nil {
		fmt.Println("resize", string(c.Payload()))
		c, err = c.AckNext(ctx)
	}
	if !errors.Is(err, queue.ErrEmpty) {
		log.Fatal(err)
	}
	n, _ := q.Len(ctx)
	fmt.Println("left:", n)
	// Output:
	// resize a.png
	// resize b.png
	// resize c.png
	// left: 0
}
