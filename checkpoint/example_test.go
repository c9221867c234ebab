package checkpoint_test

import (
	"context"
	"fmt"
	"log"
	"strconv"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
)

// A worker claims a task, resumes it from its checkpoint, saves after each
// step, and acks it together with removing the checkpoint.
func Example() {
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

	q, _ := queue.New(srv.Client, "reindex")
	if _, err := q.Enqueue(ctx, []byte("shard-7")); err != nil {
		log.Fatal(err)
	}
	claim, err := q.Consumer(s).Claim(ctx)
	if err != nil {
		log.Fatal(err)
	}
	task := string(claim.Payload())
	saver, prog, err := checkpoint.Open(ctx, srv.Client, task, claim.Guard())
	if err != nil {
		log.Fatal(err)
	}
	step := 0
	if prog.Revision != 0 {
		step, _ = strconv.Atoi(string(prog.Data))
	}
	for ; step < 3; step++ {
		// ... do step ...
		if _, err := saver.Save(ctx, []byte(strconv.Itoa(step+1))); err != nil {
			log.Fatal(err) // ErrNotHeld: the task was taken over; stop.
		}
	}
	last, _ := checkpoint.Load(ctx, srv.Client, task)
	fmt.Println("saved progress:", string(last.Data))
	if err := claim.Ack(ctx, checkpoint.DeleteOp(task)); err != nil {
		log.Fatal(err)
	}
	_, err = checkpoint.Load(ctx, srv.Client, task)
	fmt.Println(err)
	// Output:
	// saved progress: 3
	// checkpoint: not found
}
