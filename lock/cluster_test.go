package lock_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type guardedWrite struct {
	rev   int64 // revision the write landed at
	token int64
}

// Contenders on a 3-member cluster keep taking the lock while the leader
// member is hard-stopped and later restarted. Every hold makes guarded
// writes; ordered by the revision they landed at, their tokens must never go
// back (two holders at once would interleave), and the lock must keep
// working after the crash.
func TestClusterLeaderCrashDuringContention(t *testing.T) {
	cl := embedtest.StartCluster(t, 3, embedtest.FastTicks())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	var writes []guardedWrite
	var afterCrash atomic.Int32
	var crashed atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		c, err := cl.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(2*time.Second))
				if err != nil {
					if crashed.Load() {
						t.Logf("session after crash: %v", err)
					}
					continue // a member is down: try again
				}
				m, _ := lock.NewMutex(s, "crash")
				for s.Err() == nil {
					select {
					case <-stop:
						_ = s.Close(context.Background())
						return
					default:
					}
					lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
					err := m.Lock(lctx)
					lcancel()
					if err != nil {
						if crashed.Load() {
							t.Logf("lock after crash: %v (session %v)", err, s.Err())
						}
						continue
					}
					for i := range 3 {
						resp, err := m.Guard().Do(ctx, clientv3.OpPut("crash-data", "x"))
						if err != nil {
							if crashed.Load() {
								t.Logf("write after crash: %v", err)
							}
							break
						}
						mu.Lock()
						writes = append(writes, guardedWrite{resp.Header.Revision, int64(m.Token())})
						mu.Unlock()
						if i == 2 && crashed.Load() {
							afterCrash.Add(1)
						}
					}
					uctx, ucancel := context.WithTimeout(ctx, 5*time.Second)
					_ = m.Unlock(uctx)
					ucancel()
				}
				_ = s.Close(context.Background())
			}
		}()
	}
	waitWrites := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			got := len(writes)
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d guarded writes, want %d", got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitWrites(30)
	leader, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl.HardStop(leader)
	crashed.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	for afterCrash.Load() < 5 {
		if time.Now().After(deadline) {
			st, err := lock.Inspect(ctx, cl.Client, "crash")
			t.Logf("inspect err %v", err)
			for _, e := range append(st.Holders, st.Waiters...) {
				ttl, err := cl.Client.TimeToLive(ctx, e.Lease)
				t.Logf("entry %s token %d lease %x ttl %v %v", e.Key, e.Token, e.Lease, ttl.TTL, err)
			}
			t.Fatal("the lock stopped working after the leader crashed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cl.Restart(leader); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n := len(writes)
	mu.Unlock()
	waitWrites(n + 10)
	close(stop)
	wg.Wait()

	slices.SortFunc(writes, func(a, b guardedWrite) int { return int(a.rev - b.rev) })
	for i := 1; i < len(writes); i++ {
		if writes[i].token < writes[i-1].token {
			t.Fatalf("guarded write of token %d at rev %d after token %d at rev %d: two holders at once",
				writes[i].token, writes[i].rev, writes[i-1].token, writes[i-1].rev)
		}
	}
	t.Logf("%d guarded writes, %d holds after the crash", len(writes), afterCrash.Load())
}
