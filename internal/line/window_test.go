package line_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/line"
)

// A ticket far back in a line with n > 1 watches only the n+1 keys just
// ahead of it, yet is admitted exactly when fewer than n keys are ahead,
// whatever order the keys ahead leave in: keys beyond its window leaving
// alone, a key in the middle of its window, its gate, several keys in one
// transaction.
func TestWaitWindowAdmitsExactly(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	const n, ahead = 3, 24 // at least 6n ahead: a window of 3 and a gate
	keys := make([]string, ahead)
	for i := range keys {
		keys[i] = fmt.Sprintf("sem/k%02d", i)
		if _, err := srv.Client.Put(ctx, keys[i], ""); err != nil {
			t.Fatal(err)
		}
	}
	tk, err := line.Join(ctx, s, s.LineKey("sem/"), "", "sem/", n)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Ahead() != ahead {
		t.Fatalf("Join counted %d ahead, want %d", tk.Ahead(), ahead)
	}
	done := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { done <- tk.Wait(wctx, n) }()

	left := ahead
	del := func(what string, idx ...int) {
		t.Helper()
		var ops []clientv3.Op
		for _, i := range idx {
			ops = append(ops, clientv3.OpDelete(keys[i]))
		}
		if _, err := srv.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		left -= len(idx)
		if left >= n {
			select {
			case err := <-done:
				t.Fatalf("%s: admitted with %d ahead (limit %d): %v", what, left, n, err)
			case <-time.After(200 * time.Millisecond):
			}
			return
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not admitted with %d ahead (limit %d)", what, left, n)
		}
	}
	// Window: keys 21-23; gate: 20.
	del("keys beyond the gate", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	del("a key in the middle of the window", 22)
	del("the gate", 20)
	del("more beyond the gate, with a window key, in one Txn", 10, 11, 12, 13, 14, 15, 23)
	del("more beyond the window", 16, 17) // 18, 19 and 21 are left: exactly n
	del("a window key", 21)
	if tk.Ahead() != 0 && tk.Ahead() >= n {
		t.Fatalf("admitted counting %d ahead", tk.Ahead())
	}
}

// A window's watches start after the read that found their keys: a key
// deleted between the ticket's Join and its Wait is not missed.
func TestWaitWindowSeesDeletionBeforeWait(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	const n, ahead = 2, 12
	for i := range ahead {
		if _, err := srv.Client.Put(ctx, fmt.Sprintf("sem/k%02d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	tk, err := line.Join(ctx, s, s.LineKey("sem/"), "", "sem/", n)
	if err != nil {
		t.Fatal(err)
	}
	// All but one ahead leave before the wait starts.
	if _, err := srv.Client.Delete(ctx, "sem/k", clientv3.WithRange("sem/k11")); err != nil {
		t.Fatal(err)
	}
	if err := tk.Wait(ctx, n); err != nil {
		t.Fatal(err)
	}
}
