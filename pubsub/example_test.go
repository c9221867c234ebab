package pubsub_test

import (
	"context"
	"fmt"
	"log"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

func Example() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(100))
	if err != nil {
		log.Fatal(err)
	}
	first, _ := ps.Publish(ctx, "orders", []byte("order 1"))
	_, _ = ps.Publish(ctx, "orders", []byte("order 2"))

	// Read from the oldest retained message; the subscription follows new
	// messages until ctx ends.
	sub, err := ps.Subscribe(ctx, "orders", pubsub.Oldest)
	if err != nil {
		log.Fatal(err)
	}
	_, _ = ps.Publish(ctx, "orders", []byte("order 3"))
	var last int64
	for range 3 {
		ev := <-sub.C()
		if ev.Gap != nil {
			fmt.Println("lost:", ev.Gap)
			continue
		}
		fmt.Println(string(ev.Data))
		last = ev.Revision
	}
	fmt.Println("revisions in order:", last > first)

	// A subscriber that restarts resumes after the last revision it
	// handled: nothing again, nothing missed.
	_, _ = ps.Publish(ctx, "orders", []byte("order 4"))
	resumed, err := ps.Subscribe(ctx, "orders", pubsub.After(last))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string((<-resumed.C()).Data))
	// Output:
	// order 1
	// order 2
	// order 3
	// revisions in order: true
	// order 4
}

func ExampleClient_Watch() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	_, _ = srv.Client.Put(ctx, "config/log-level", "info")
	ps, err := pubsub.New(srv.Client)
	if err != nil {
		log.Fatal(err)
	}
	w, err := ps.Watch(ctx, "config/log-level")
	if err != nil {
		log.Fatal(err)
	}
	// The current value first...
	u := <-w.C()
	fmt.Printf("snapshot: %s\n", u.KVs[0].Value)
	// ...then every change.
	_, _ = srv.Client.Put(ctx, "config/log-level", "debug")
	u = <-w.C()
	fmt.Printf("changed: %s\n", u.Events[0].Kv.Value)
	// Output:
	// snapshot: info
	// changed: debug
}

func ExampleClient_Subscribe_gap() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(2))
	if err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		_, _ = ps.Publish(ctx, "ticks", fmt.Appendf(nil, "tick %d", i))
	}
	// Retention kept the last 2: a subscriber asking for everything is
	// told exactly what it missed.
	sub, err := ps.Subscribe(ctx, "ticks", pubsub.After(0))
	if err != nil {
		log.Fatal(err)
	}
	for range 3 {
		ev := <-sub.C()
		if ev.Gap != nil {
			fmt.Println("lost", ev.Gap.Count, "messages")
			continue
		}
		fmt.Println(string(ev.Data))
	}
	// Output:
	// lost 3 messages
	// tick 4
	// tick 5
}

func ExampleWithKeepUntilCompaction() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pub, err := pubsub.New(srv.Client, pubsub.WithKeepUntilCompaction())
	if err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		_, _ = pub.Publish(ctx, "prices", fmt.Appendf(nil, "price %d", i))
	}
	// The messages live in etcd's history until it is compacted; the
	// newest outlives compaction.
	_, _ = srv.Compact(ctx)

	// A subscriber needs no option: the topic's mode is in etcd.
	ps, err := pubsub.New(srv.Client)
	if err != nil {
		log.Fatal(err)
	}
	sub, err := ps.Subscribe(ctx, "prices", pubsub.After(0))
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		ev := <-sub.C()
		if ev.Gap != nil {
			fmt.Println("compacted:", ev.Gap.Count, "messages")
			continue
		}
		fmt.Println(string(ev.Data), "#", ev.Seq)
	}
	// Output:
	// compacted: 3 messages
	// price 4 # 4
}
