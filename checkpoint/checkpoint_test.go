package checkpoint_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/queue"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSession(t *testing.T, c *clientv3.Client, ttl time.Duration) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(testCtx(t), c, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func TestSaveFencedByGuard(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	if _, err := checkpoint.Load(ctx, srv.Client, "task-1"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load before any save = %v", err)
	}
	sa := newSession(t, srv.Client, 5*time.Second)
	a, _ := lock.NewMutex(sa, "task-1")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	sv, p, err := checkpoint.Open(ctx, srv.Client, "task-1", a.Guard())
	if err != nil || p.Revision != 0 {
		t.Fatalf("Open = %+v %v", p, err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := sv.Save(ctx, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// a loses the task; b takes it over and continues from 3.
	if _, err := srv.Client.Revoke(ctx, sa.Lease()); err != nil {
		t.Fatal(err)
	}
	b, _ := lock.NewMutex(newSession(t, srv.Client, 5*time.Second), "task-1")
	if err := b.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Save(ctx, []byte("4")); !errors.Is(err, checkpoint.ErrNotHeld) {
		t.Fatalf("stale owner's save = %v, want ErrNotHeld", err)
	}
	svb, p, err := checkpoint.Open(ctx, srv.Client, "task-1", b.Guard())
	if err != nil || string(p.Data) != "3" {
		t.Fatalf("new owner loads %q %v, want 3", p.Data, err)
	}
	// A second saver for the same holder that did not load the latest.
	other, _, _ := checkpoint.Open(ctx, srv.Client, "task-1", b.Guard())
	if _, err := svb.Save(ctx, []byte("4")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Save(ctx, []byte("3-again")); !errors.Is(err, checkpoint.ErrStale) {
		t.Fatalf("save over a newer checkpoint = %v, want ErrStale", err)
	}
	got, _ := checkpoint.Load(ctx, srv.Client, "task-1")
	if string(got.Data) != "4" {
		t.Fatalf("checkpoint %q, want 4", got.Data)
	}
	_ = b.Unlock(ctx)
}

// Workers take tasks from a queue, resume each from its checkpoint, save
// after each unit and ack with the checkpoint removed. One worker is cut off
// mid-task: its next save fails and another worker resumes from the last
// checkpoint. Every unit is done at least once, progress never goes
// backwards, and no checkpoint is left.
func TestQueueWorkersResumeFromCheckpoint(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cutClient, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	q, _ := queue.New(srv.Client, "tasks")
	const tasks, units = 4, 10
	for i := range tasks {
		if _, err := q.Enqueue(ctx, []byte("task-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	done := map[string][]int{} // task -> units in the order they were done
	var staleSaves int

	work := func(c *clientv3.Client, s *concurrency.Session, stopAfter int) error {
		qc, _ := queue.New(c, "tasks")
		for n := 0; ; n++ {
			cl, err := qc.Consumer(s).TryClaim(ctx)
			if errors.Is(err, queue.ErrEmpty) {
				return nil
			}
			if err != nil {
				return err
			}
			task := string(cl.Payload())
			sv, prog, err := checkpoint.Open(ctx, c, task, cl.Guard())
			if err != nil {
				return err
			}
			start := 0
			if prog.Revision != 0 {
				start, _ = strconv.Atoi(string(prog.Data))
			}
			for u := start; u < units; u++ {
				mu.Lock()
				done[task] = append(done[task], u)
				mu.Unlock()
				if stopAfter >= 0 && u == stopAfter {
					p.Blackhole() // cut off mid-task
					sctx, cancel := context.WithTimeout(ctx, time.Second)
					_, err := sv.Save(sctx, []byte(strconv.Itoa(u+1)))
					cancel()
					if err == nil {
						return errors.New("save landed while cut off")
					}
					<-s.Done()
					mu.Lock()
					staleSaves++
					mu.Unlock()
					p.Unblackhole()
					// The session counted itself lost before the server
					// let the lease go (by design); once the server has,
					// a save must fail and land nothing.
					for ttl := int64(0); ttl != -1; {
						resp, err := srv.Client.TimeToLive(ctx, s.Lease())
						if err != nil {
							return err
						}
						ttl = resp.TTL
						time.Sleep(20 * time.Millisecond)
					}
					if _, err := sv.Save(ctx, []byte("999")); err == nil {
						return errors.New("stale save landed")
					}
					return nil
				}
				if _, err := sv.Save(ctx, []byte(strconv.Itoa(u+1))); err != nil {
					return err
				}
			}
			if err := cl.Ack(ctx, checkpoint.DeleteOp(task)); err != nil {
				return err
			}
		}
	}
	cutSession := newSession(t, cutClient, 2*time.Second)
	if err := work(cutClient, cutSession, 4); err != nil {
		t.Fatal(err)
	}
	// The cut-off worker's item comes back once its lease expires.
	s := newSession(t, srv.Client, 5*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := work(srv.Client, s, -1); err != nil {
			t.Fatal(err)
		}
		n, err := q.Len(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d items left", n)
		}
		// Wait for the cut-off worker's lease to expire: its claim then
		// goes and TryClaim returns the item to the queue.
		time.Sleep(100 * time.Millisecond)
	}
	if staleSaves != 1 {
		t.Fatalf("%d workers were cut off, want 1", staleSaves)
	}
	for i := range tasks {
		task := "task-" + strconv.Itoa(i)
		seen := map[int]bool{}
		for _, u := range done[task] {
			seen[u] = true
		}
		if len(seen) != units {
			t.Errorf("%s: units done %v, want all %d", task, done[task], units)
		}
		if _, err := checkpoint.Load(ctx, srv.Client, task); !errors.Is(err, checkpoint.ErrNotFound) {
			t.Errorf("%s: checkpoint left after ack: %v", task, err)
		}
	}
	// The cut task was resumed from its checkpoint (unit 4), not restarted.
	for _, units := range done {
		for i := 1; i < len(units); i++ {
			if units[i] < units[i-1] {
				t.Errorf("progress went backwards: %v", units)
			}
		}
	}
}

// A save under a combined guard (a multi-lock's) whose second resource is
// lost fails with ErrNotHeld, not ErrStale: every guarded key is checked.
func TestSaveCombinedGuardNotHeld(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	s1, s2 := newSession(t, srv.Client, 5*time.Second), newSession(t, srv.Client, 5*time.Second)
	a, _ := lock.NewMutex(s1, "combined-a")
	b, _ := lock.NewMutex(s2, "combined-b")
	for _, m := range []*lock.Mutex{a, b} {
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	g := concurrency.Guard(fence.Combine(fence.Guard(a.Guard()), fence.Guard(b.Guard())))
	sv, _, err := checkpoint.Open(ctx, srv.Client, "combined", g)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Save(ctx, []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Revoke(ctx, s2.Lease()); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Save(ctx, []byte("2")); !errors.Is(err, checkpoint.ErrNotHeld) || errors.Is(err, checkpoint.ErrStale) {
		t.Fatalf("save after the second resource was lost = %v, want ErrNotHeld", err)
	}
	_ = a.Unlock(ctx)
}
