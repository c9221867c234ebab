package election_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Three electors on a 3-member cluster, each connected to its own member.
// The member the leading elector talks to is hard-stopped mid-run (and is
// the etcd leader too, when they differ: both are crashed), so the leader is
// deposed and another elected. Leaders write under their term's guard;
// ordered by revision, the terms' tokens never go back (one leader per
// term), and a deposed leader's guarded writes fail.
func TestClusterLeaderMemberCrash(t *testing.T) {
	cl := embedtest.StartCluster(t, 3, embedtest.FastTicks())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type write struct{ rev, token int64 }
	var mu sync.Mutex
	var writes []write
	var staleLanded, terms atomic.Int32
	var leading atomic.Int32
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 3 {
		c, err := cl.NewMemberClient(i)
		if err != nil {
			t.Fatal(err)
		}
		el, err := election.NewElector(c, election.Config{
			Name: "crash",
			OnElected: func(ctx context.Context, term *election.Leadership) {
				terms.Add(1)
				leading.Store(int32(i))
				for ctx.Err() == nil {
					resp, err := term.Guard().Do(ctx, clientv3.OpPut("crash-state", "x"))
					if err == nil {
						mu.Lock()
						writes = append(writes, write{resp.Header.Revision, int64(term.Token())})
						mu.Unlock()
					}
					time.Sleep(2 * time.Millisecond)
				}
				if term.Err() != nil && !errors.Is(term.Err(), concurrency.ErrReleased) {
					// Lost: a deposed leader's write must not land.
					wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
					if _, err := term.Guard().Do(wctx, clientv3.OpPut("crash-state", "stale")); err == nil {
						staleLanded.Add(1)
					}
					wcancel()
				}
			},
			SessionOptions: []concurrency.SessionOption{concurrency.WithTTL(2 * time.Second)},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = el.Run(runCtx)
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(writes)
	}
	waitFor := func(what string, ok func() bool) {
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("first leader's writes", func() bool { return count() >= 20 })
	before := terms.Load()
	victim := int(leading.Load())
	etcdLeader, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl.HardStop(victim)
	if etcdLeader != victim {
		cl.HardStop(etcdLeader)
		// Two of three down: bring the etcd leader back for a quorum.
		if err := cl.Restart(etcdLeader); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("a new term", func() bool { return terms.Load() > before })
	n := count()
	waitFor("writes after the crash", func() bool { return count() >= n+20 })
	if err := cl.Restart(victim); err != nil {
		t.Fatal(err)
	}
	n = count()
	waitFor("writes after the restart", func() bool { return count() >= n+20 })
	stopRun()
	wg.Wait()
	if staleLanded.Load() != 0 {
		t.Fatalf("%d writes of deposed leaders landed", staleLanded.Load())
	}
	slices.SortFunc(writes, func(a, b write) int { return int(a.rev - b.rev) })
	for i := 1; i < len(writes); i++ {
		if writes[i].token < writes[i-1].token {
			t.Fatalf("term %d wrote at rev %d after term %d at rev %d: two leaders at once",
				writes[i].token, writes[i].rev, writes[i-1].token, writes[i-1].rev)
		}
	}
	t.Logf("%d guarded writes over %d terms", len(writes), terms.Load())
}
