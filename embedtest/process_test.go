package embedtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// requireBinary returns the etcd binary named by BinaryEnv, or skips t.
func requireBinary(t *testing.T) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		t.Skipf("needs an etcd server binary: %s=$(scripts/etcd-bin.sh 3.5.36)", BinaryEnv)
	}
	return bin
}

func TestProcessClusterNeedsBinary(t *testing.T) {
	if _, err := NewProcessCluster("", 3); err == nil {
		t.Fatal("NewProcessCluster without a binary succeeded")
	}
	missing := filepath.Join(t.TempDir(), "no-etcd")
	if _, err := NewProcessCluster(missing, 3); err == nil {
		t.Fatal("NewProcessCluster with a missing binary succeeded")
	}
	if _, err := NewProcessCluster(os.Args[0], 0); err == nil {
		t.Fatal("NewProcessCluster of 0 members succeeded")
	}
}

// TestProcessClusterFaults kills, pauses and restarts real server
// processes and checks that the cluster goes on and keeps its data.
func TestProcessClusterFaults(t *testing.T) {
	bin := requireBinary(t)
	ctx := testContext(t)
	c, err := NewProcessCluster(bin, 3, FastTicks())
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() == "" {
		t.Fatal("no version")
	}
	t.Logf("etcd %s", c.Version())
	if err := put(ctx, c.Client, "k", "1"); err != nil {
		t.Fatal(err)
	}

	// SIGKILL the leader: another member leads, writes go on, and the
	// killed member comes back on its data dir with the newer write.
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	next, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("killed member %d still counted as leader", leader)
	}
	if err := put(ctx, c.Client, "k", "2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx, leader); err != nil {
		t.Fatal(err)
	}
	back, err := c.NewMemberClient(leader)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventually(10*time.Second, wantValue(ctx, back, "k", "2", clientv3.WithSerializable())); err != nil {
		t.Fatalf("restarted member %d: %v", leader, err)
	}

	// SIGSTOP the leader past the election timeout: the others elect a new
	// one while the stopped process keeps its sockets; after SIGCONT it
	// follows and catches up.
	leader, err = c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Pause(leader)
	next, err = c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("paused member %d still counted as leader", leader)
	}
	if err := put(ctx, c.Client, "k", "3"); err != nil {
		t.Fatal(err)
	}
	paused, err := c.NewMemberClient(leader)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = paused.Get(sctx, "k", clientv3.WithSerializable())
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a read from the paused member = %v, want no answer", err)
	}
	c.Resume(leader)
	if err := eventually(10*time.Second, wantValue(ctx, paused, "k", "3", clientv3.WithSerializable())); err != nil {
		t.Fatalf("resumed member %d: %v", leader, err)
	}

	// The whole cluster killed at once and restarted keeps its data.
	c.KillAll()
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = c.Leader(lctx)
	cancel()
	if err == nil {
		t.Fatal("a leader with every member killed")
	}
	if err := c.RestartAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := eventually(10*time.Second, wantValue(ctx, c.Client, "k", "3")); err != nil {
		t.Fatalf("after a whole-cluster restart: %v", err)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Restart(ctx, 0); !errors.Is(err, errClusterClosed) {
		t.Fatalf("Restart after Close = %v", err)
	}
	for i, m := range c.members {
		if m.cmd.ProcessState == nil {
			t.Fatalf("member %d's process not waited for after Close", i)
		}
	}
	if _, err := os.Stat(c.tmp); !os.IsNotExist(err) {
		t.Fatalf("data dir left after Close: %v", err)
	}
}
