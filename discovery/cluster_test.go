package discovery_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// On a 3-member cluster: a hard-stopped member (the leader) does not stop
// registration and watching; watchers converge to the true set. Then a
// second member is stopped (no quorum: a full outage) — watchers keep
// serving, stale — and when both members return every watcher converges
// again, the registrations having survived or been put back.
func TestClusterCrashAndOutage(t *testing.T) {
	ctx := testCtx(t)
	cl := embedtest.StartCluster(t, 3, embedtest.FastTicks())
	r := newRegistry(t, cl.Client)
	a := register(t, ctx, r, "api", "a", "127.0.0.1:7001")
	register(t, ctx, r, "api", "b", "127.0.0.1:7002")
	register(t, ctx, r, "api", "c", "127.0.0.1:7003")

	leader, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One watcher per member, and one of all members.
	ws := map[string]*discovery.Watcher{}
	mcs := make([]*clientv3.Client, 3)
	for i := range 3 {
		c, err := cl.NewMemberClient(i)
		if err != nil {
			t.Fatal(err)
		}
		mcs[i] = c
		ws[fmt.Sprintf("member %d", i)] = newWatcher(t, c, "api")
	}
	all, err := cl.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ws["all members"] = newWatcher(t, all, "api")
	for name, w := range ws {
		eventually(t, 5*time.Second, name+" lists a, b, c", current(w, "a", "b", "c"))
	}

	stopped := crash(t, ctx, cl, leader, mcs[leader])
	// A request proposed to the crashed leader hangs for etcd's request
	// timeout (5s): try again with short attempts.
	eventually(t, 10*time.Second, "deregister a", func() error {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return a.Deregister(actx)
	})
	eventually(t, 10*time.Second, "register d", func() error {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := r.Register(actx, "api", discovery.Instance{ID: "d", Addr: "127.0.0.1:7004"})
		return err
	})
	for name, w := range ws {
		if name == fmt.Sprintf("member %d", leader) {
			continue // its only member is down
		}
		eventually(t, 10*time.Second, name+" converges after the crash", current(w, "b", "c", "d"))
	}

	// Full outage: a second member down, no quorum.
	second := (leader + 1) % 3
	stopped2 := crash(t, ctx, cl, second, mcs[second])
	third := fmt.Sprintf("member %d", 3-leader-second)
	eventually(t, 10*time.Second, "stale in the outage", func() error {
		if !ws[third].Stale() || !ws["all members"].Stale() {
			return fmt.Errorf("not stale")
		}
		return nil
	})
	for _, name := range []string{third, "all members"} {
		if err := hasIDs(ws[name], "b", "c", "d")(); err != nil {
			t.Fatalf("%s during the outage: %v", name, err)
		}
	}

	<-stopped
	<-stopped2
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for k, i := range []int{leader, second} {
		wg.Go(func() { errs[k] = cl.Restart(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for name, w := range ws {
		eventually(t, 20*time.Second, name+" converges after the outage", current(w, "b", "c", "d"))
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	register(t, rctx, r, "api", "e", "127.0.0.1:7005")
	for name, w := range ws {
		eventually(t, 10*time.Second, name+" sees e", current(w, "b", "c", "d", "e"))
	}
}

// crash hard-stops member i and returns once it no longer answers (c is a
// client of that member only). The stop itself finishes in the background
// (embed's Close waits seconds for open streams); the returned channel is
// closed when it has.
func crash(t *testing.T, ctx context.Context, cl *embedtest.Cluster, i int, c *clientv3.Client) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl.HardStop(i)
	}()
	eventually(t, 10*time.Second, fmt.Sprintf("member %d down", i), func() error {
		gctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		// Serializable reads are answered until the member's gRPC server
		// closes; a linearizable one needs the stopped Raft loop.
		if _, err := c.Get(gctx, "probe"); err == nil {
			return fmt.Errorf("member %d still answers", i)
		}
		return nil
	})
	return done
}
