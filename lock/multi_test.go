package lock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newMulti(t *testing.T, s *concurrency.Session, names ...string) *lock.Multi {
	t.Helper()
	m, err := lock.NewMulti(s, names)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMultiLocksAllAsOne(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	m := newMulti(t, s, "c", "a", "b", "a")
	if got := m.Names(); fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("Names = %v", got)
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(ctx); !errors.Is(err, lock.ErrAlreadyLocked) {
		t.Fatalf("second Lock = %v", err)
	}
	other := newSession(t, srv.Client, 5*time.Second)
	var tokens []int64
	for _, name := range []string{"a", "b", "c"} {
		st, err := lock.Inspect(ctx, srv.Client, name)
		if err != nil || len(st.Holders) != 1 || st.Holders[0].Token != m.TokenOf(name) {
			t.Fatalf("lock %s: %+v %v, want held with token %d", name, st, err, m.TokenOf(name))
		}
		tokens = append(tokens, int64(m.TokenOf(name)))
		if err := newMutex(t, other, name).TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
			t.Fatalf("TryLock of %s under a Multi = %v", name, err)
		}
	}
	if int64(m.Token()) != max(tokens[0], tokens[1], tokens[2]) || m.TokenOf("zzz") != 0 {
		t.Fatalf("Token %d, want the highest of %v", m.Token(), tokens)
	}
	if _, err := m.Guard().Do(ctx, clientv3.OpPut("data", "1")); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	if !errors.Is(m.Err(), concurrency.ErrReleased) {
		t.Fatalf("Err after Unlock = %v", m.Err())
	}
	for _, name := range []string{"a", "b", "c"} {
		if n := lineLen(t, srv.Client, name); n != 0 {
			t.Fatalf("lock %s has %d keys after Unlock", name, n)
		}
	}
	if _, err := lock.NewMulti(s, nil); !errors.Is(err, lock.ErrInvalidName) {
		t.Fatalf("NewMulti(nil) = %v", err)
	}
	if _, err := lock.NewMulti(s, []string{"a", "b/.x"}); !errors.Is(err, lock.ErrInvalidName) {
		t.Fatalf("NewMulti with a bad name = %v", err)
	}
}

// Losing one lock ends the hold and releases the others at once.
func TestMultiLossReleasesAll(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	m := newMulti(t, s, "a", "b", "c")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	g := m.Guard()
	waiter := newMutex(t, newSession(t, srv.Client, 5*time.Second), "c")
	w := lockAsync(ctx, waiter)
	mustWait(t, w, "Lock of c under a Multi")
	st, _ := lock.Inspect(ctx, srv.Client, "b")
	if _, err := srv.Client.Delete(ctx, st.Holders[0].Key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done still open after one lock was lost")
	}
	if !errors.Is(m.Err(), concurrency.ErrKeyDeleted) {
		t.Fatalf("Err = %v, want ErrKeyDeleted", m.Err())
	}
	if err := mustGet(t, w, 5*time.Second, "Lock of c after the Multi lost b"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Do(ctx, clientv3.OpPut("data", "1")); !errors.Is(err, concurrency.ErrNotHeld) {
		t.Fatalf("guarded write after a loss = %v", err)
	}
	if n := lineLen(t, srv.Client, "a"); n != 0 {
		t.Fatalf("lock a keeps %d keys after the Multi lost b", n)
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	_ = waiter.Unlock(ctx)
}

// A cancelled Lock leaves no key on any lock, taken or waited for.
func TestMultiCancelledLeavesNoKey(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	holder := newMutex(t, newSession(t, srv.Client, 5*time.Second), "b")
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	m := newMulti(t, newSession(t, srv.Client, 5*time.Second), "a", "b", "c")
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := m.Lock(lctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v", err)
	}
	if err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock = %v", err)
	}
	for name, want := range map[string]int{"a": 0, "b": 1, "c": 0} {
		if n := lineLen(t, srv.Client, name); n != want {
			t.Fatalf("lock %s has %d keys, want %d", name, n, want)
		}
	}
	_ = holder.Unlock(ctx)
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	_ = m.Unlock(ctx)
}

// Multi.Do cancels fn's context when a lock is lost and releases the other
// locks only once fn has returned.
func TestMultiDoReleasesAfterFn(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, 5*time.Second)
	inFn := make(chan struct{})
	finish := make(chan struct{})
	causes := make(chan error, 1)
	m, err := lock.NewMulti(s, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	done := async(func() error {
		return m.Do(ctx, func(ctx context.Context) error {
			close(inFn)
			<-ctx.Done()
			causes <- context.Cause(ctx)
			<-finish
			return nil
		})
	})
	<-inFn
	st, _ := lock.Inspect(ctx, srv.Client, "a")
	if _, err := srv.Client.Delete(ctx, st.Holders[0].Key); err != nil {
		t.Fatal(err)
	}
	// fn's context ends; b stays held while fn drains.
	if cause := mustGet(t, causes, 5*time.Second, "fn's context after a loss"); !errors.Is(cause, concurrency.ErrKeyDeleted) {
		t.Fatalf("fn's context cause = %v", cause)
	}
	if n := lineLen(t, srv.Client, "b"); n != 1 {
		t.Fatalf("b has %d keys while fn drains, want its holder's", n)
	}
	close(finish)
	if err := mustGet(t, done, 5*time.Second, "Do"); err != nil {
		t.Fatal(err)
	}
	if n := lineLen(t, srv.Client, "b"); n != 0 {
		t.Fatalf("b keeps %d keys after Do returned", n)
	}
}

func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// Randomized overlapping sets over 8 sessions, each on its own client: no
// Lock stays blocked past a bound (no deadlock), and no lock ever has two
// holders: each hold writes, under the Multi's Guard, every lock's fencing
// token to that lock's resource key, accepted only if higher than the one
// there, and a watch of the resource keys sees each key's tokens strictly
// increase. Bounded in rounds and time.
func TestMultiRandomOverlapNoDeadlock(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const sessions, rounds, names = 8, 12, 6
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	res := func(name string) string { return "multi-res/" + name }
	pad := func(tok int64) string { return fmt.Sprintf("%020d", tok) }

	// The record: every write to the resource keys, in order.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	resp, err := srv.Client.Get(ctx, "multi-res/")
	if err != nil {
		t.Fatal(err)
	}
	wch := srv.Client.Watch(wctx, "multi-res/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))

	// Value compares fail on a missing key: create every resource first.
	for j := range names {
		if _, err := srv.Client.Put(ctx, res("multi/"+strconv.Itoa(j)), pad(0)); err != nil {
			t.Fatal(err)
		}
	}
	var holders [names]atomic.Int32 // in-process check, alongside the record
	var writes atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, sessions*rounds*(names+2)) // never blocks a worker
	for i := range sessions {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		s := newSession(t, c, 5*time.Second)
		r := rand.New(rand.NewPCG(uint64(seed), uint64(i)))
		wg.Go(func() {
			for range rounds {
				var set []string
				for _, j := range r.Perm(names)[:1+r.IntN(4)] {
					set = append(set, "multi/"+strconv.Itoa(j))
				}
				m, err := lock.NewMulti(s, set)
				if err != nil {
					errs <- err
					return
				}
				lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				err = m.Lock(lctx)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("Lock(%v) did not return within 15s (deadlock?): %w", set, err)
					return
				}
				for _, name := range m.Names() {
					j, _ := strconv.Atoi(name[len("multi/"):])
					if holders[j].Add(1) != 1 {
						errs <- fmt.Errorf("two holders of %s at once", name)
					}
				}
				var cmps []clientv3.Cmp
				var ops []clientv3.Op
				for _, name := range m.Names() {
					tok := pad(int64(m.TokenOf(name)))
					cmps = append(cmps, clientv3.Compare(clientv3.Value(res(name)), "<", tok))
					ops = append(ops, clientv3.OpPut(res(name), tok))
				}
				tr, err := m.Guard().Txn(ctx, cmps...).Then(ops...).Commit()
				switch {
				case err != nil:
					errs <- err
				case !tr.Succeeded:
					errs <- fmt.Errorf("guarded write of %v refused while held: a resource had a higher token", m.Names())
				default:
					writes.Add(1)
				}
				for _, name := range m.Names() {
					j, _ := strconv.Atoi(name[len("multi/"):])
					holders[j].Add(-1)
				}
				if err := m.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// The record: each resource's tokens strictly increase.
	end, err := srv.Client.Put(ctx, "multi-res/zz-end", "")
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]string{}
	n := 0
	for wr := range wch {
		for _, ev := range wr.Events {
			k, v := string(ev.Kv.Key), string(ev.Kv.Value)
			if ev.Kv.ModRevision == end.Header.Revision {
				stopWatch()
				continue
			}
			if v <= last[k] {
				t.Errorf("%s took token %s after %s: two holders", k, v, last[k])
			}
			last[k] = v
			n++
		}
	}
	if int64(n) < writes.Load() || writes.Load() != sessions*rounds {
		t.Fatalf("%d resource writes recorded, %d guarded holds, want %d", n, writes.Load(), sessions*rounds)
	}
}
