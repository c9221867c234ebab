package embedtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// put writes through c, retrying while the cluster settles (a client may
// still be pointed at a member that just went away).
func put(ctx context.Context, c *clientv3.Client, key, val string) error {
	return eventually(10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := c.Put(ctx, key, val)
		return err
	})
}

func memberClient(t *testing.T, c *Cluster, i int) *clientv3.Client {
	t.Helper()
	cli, err := c.NewMemberClient(i)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// selfLeader reports whether member i believes it is the leader.
func selfLeader(c *Cluster, i int) bool {
	e := c.members[i].server()
	return e != nil && e.Server.Leader() == e.Server.MemberID()
}

// oneSelfLeader fails unless exactly one running member believes it leads.
func oneSelfLeader(c *Cluster) error {
	var leaders []int
	for i := range c.members {
		if selfLeader(c, i) {
			leaders = append(leaders, i)
		}
	}
	if len(leaders) != 1 {
		return fmt.Errorf("members leading: %v", leaders)
	}
	return nil
}

func TestClusterReplicatesAndCloses(t *testing.T) {
	ctx := testContext(t)
	c, err := NewCluster(3, FastTicks())
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("%d endpoints, want 3", got)
	}
	if _, err := c.Leader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, c.Client, "k", "v"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		cli := memberClient(t, c, i)
		// A serializable read is served from the member's own store.
		if err := eventually(5*time.Second, wantValue(ctx, cli, "k", "v", clientv3.WithSerializable())); err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	if _, err := c.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	dir := c.tmp
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Restart(0); !errors.Is(err, errClusterClosed) {
		t.Errorf("Restart after Close: %v, want %v", err, errClusterClosed)
	}
	if _, err := c.NewClient(); err == nil {
		t.Error("NewClient after Close succeeded")
	}
	if dir == "" {
		t.Error("no temp dir")
	}
}

func TestClusterHardStopLeaderAndRestart(t *testing.T) {
	ctx := testContext(t)
	c := StartCluster(t, 3, FastTicks())
	if err := put(ctx, c.Client, "before", "1"); err != nil {
		t.Fatal(err)
	}
	old, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}

	c.HardStop(old)
	lead, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if lead == old {
		t.Fatalf("leader still %d after it was stopped", old)
	}
	if err := put(ctx, c.Client, "after", "2"); err != nil {
		t.Fatalf("put after leader crash: %v", err)
	}
	// While it is down its ports stay reserved: nobody else (say another
	// package's tests, run in parallel) can take them from the restart.
	if runtime.GOOS == "linux" {
		for _, u := range []url.URL{c.members[old].clientURL, c.members[old].peerURL} {
			if l, err := net.Listen("tcp", u.Host); err == nil {
				_ = l.Close()
				t.Fatalf("stopped member's port %s could be taken", u.Host)
			}
		}
	}

	if err := c.Restart(old); err != nil {
		t.Fatal(err)
	}
	cli := memberClient(t, c, old)
	for key, val := range map[string]string{"before": "1", "after": "2"} {
		if err := eventually(10*time.Second, wantValue(ctx, cli, key, val)); err != nil {
			t.Fatalf("restarted member %d: %v", old, err)
		}
	}

	// A graceful stop hands leadership off before the member goes.
	cur, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(cur)
	c.Stop(cur) // safe twice
	if next, err := c.Leader(ctx); err != nil || next == cur {
		t.Fatalf("after graceful stop of %d: leader %d, %v", cur, next, err)
	}
	if err := put(ctx, c.Client, "graceful", "3"); err != nil {
		t.Fatal(err)
	}
}

func TestClusterIsolateLeader(t *testing.T) {
	ctx := testContext(t)
	c := StartCluster(t, 3, FastTicks())
	if err := put(ctx, c.Client, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	old, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	isolated := memberClient(t, c, old)
	if err := eventually(5*time.Second, wantValue(ctx, isolated, "k", "v1", clientv3.WithSerializable())); err != nil {
		t.Fatal(err)
	}

	c.Isolate(old)
	// The isolated leader hears no quorum and steps down...
	if err := eventually(5*time.Second, func() error {
		if selfLeader(c, old) {
			return fmt.Errorf("isolated member %d still leads", old)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// ...while the rest elect one of their own and take writes.
	lead, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if lead == old {
		t.Fatalf("leader is the isolated member %d", old)
	}
	if err := put(ctx, memberClient(t, c, lead), "k", "v2"); err != nil {
		t.Fatalf("put on the majority side: %v", err)
	}
	// The isolated member hears none of it: its own store keeps the old
	// value and it cannot serve a linearizable read.
	if err := wantValue(ctx, isolated, "k", "v1", clientv3.WithSerializable())(); err != nil {
		t.Fatalf("isolated member: %v", err)
	}
	if _, err := getValue(ctx, isolated, "k"); err == nil {
		t.Fatal("isolated member served a linearizable read")
	}

	c.Heal(old)
	if err := eventually(10*time.Second, wantValue(ctx, isolated, "k", "v2")); err != nil {
		t.Fatalf("healed member %d did not catch up: %v", old, err)
	}
	if _, err := c.Leader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := eventually(5*time.Second, func() error { return oneSelfLeader(c) }); err != nil {
		t.Fatal(err)
	}
}

func TestClusterIsolateHoldsAcrossRestart(t *testing.T) {
	ctx := testContext(t)
	c := StartCluster(t, 3, FastTicks())
	lead, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cut := (lead + 1) % 3
	cutCli := memberClient(t, c, cut)
	c.Isolate(cut)
	c.HardStop(cut)
	if err := c.Restart(cut); err == nil {
		t.Fatal("Restart of an isolated member succeeded")
	}
	c.Heal(cut)
	if err := c.Restart(cut); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, c.Client, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := eventually(10*time.Second, wantValue(ctx, cutCli, "k", "v1", clientv3.WithSerializable())); err != nil {
		t.Fatal(err)
	}

	// Crash the leader while a follower is isolated: no quorum is left
	// until the leader comes back, and it must come back cut off from the
	// isolated member.
	c.Isolate(cut)
	c.HardStop(lead)
	if err := c.Restart(lead); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, c.Client, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	// The other two have it...
	for i := range 3 {
		if i == cut {
			continue
		}
		if err := eventually(10*time.Second, wantValue(ctx, memberClient(t, c, i), "k", "v2", clientv3.WithSerializable())); err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	// ...the isolated member does not.
	if err := wantValue(ctx, cutCli, "k", "v1", clientv3.WithSerializable())(); err != nil {
		t.Fatalf("isolated member: %v", err)
	}
	c.Heal(cut)
	if err := eventually(10*time.Second, wantValue(ctx, cutCli, "k", "v2")); err != nil {
		t.Fatalf("healed member: %v", err)
	}
}
