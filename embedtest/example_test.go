package embedtest_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/concordkit/concord/embedtest"
)

// New runs an etcd in this process on free loopback ports, with its data
// in a temp dir that Close removes. In a test, Start does the same and
// closes it with t.Cleanup.
func ExampleNew() {
	srv, err := embedtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	fmt.Println("loopback:", strings.HasPrefix(srv.Endpoints[0], "http://127.0.0.1:"))
	if _, err := srv.Client.Put(ctx, "greeting", "hello"); err != nil {
		log.Fatal(err)
	}
	resp, err := srv.Client.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("greeting = %s\n", resp.Kvs[0].Value)
	// Output:
	// loopback: true
	// greeting = hello
}

// A cluster's members can be stopped and restarted with their data; the
// others keep serving meanwhile (two of three are a quorum).
func ExampleNewCluster() {
	c, err := embedtest.NewCluster(3, embedtest.FastTicks())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	m1, err := c.NewMemberClient(1)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := m1.Put(ctx, "k", "before"); err != nil {
		log.Fatal(err)
	}
	c.Stop(0)
	if _, err := m1.Put(ctx, "k", "while member 0 is down"); err != nil {
		log.Fatal(err)
	}
	if err := c.Restart(0); err != nil {
		log.Fatal(err)
	}
	m0, err := c.NewMemberClient(0)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := m0.Get(ctx, "k")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("member 0 after restart: k = %s\n", resp.Kvs[0].Value)
	// Output: member 0 after restart: k = while member 0 is down
}
