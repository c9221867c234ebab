package semaphore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
)

func TestStoreLimitAdmitsWaiters(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	if err := semaphore.StoreLimit(ctx, srv.Client, "deploys", 0); !errors.Is(err, semaphore.ErrInvalidLimit) {
		t.Fatalf("StoreLimit 0 = %v, want ErrInvalidLimit", err)
	}
	if err := semaphore.StoreLimit(ctx, srv.Client, "", 2); err == nil {
		t.Fatal("StoreLimit of an empty name succeeded")
	}
	a := newSem(t, newSession(t, srv.Client, 5*time.Second), "deploys", 1, semaphore.WithFollowLimit())
	b := newSem(t, newSession(t, srv.Client, 5*time.Second), "deploys", 1, semaphore.WithFollowLimit())
	pa := mustAcquire(t, ctx, a)
	waiting := acquireAsync(ctx, b)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := semaphore.Inspect(ctx, srv.Client, "deploys")
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Waiters) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b not waiting within 10s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := semaphore.StoreLimit(ctx, srv.Client, "deploys", 2); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, waiting, 10*time.Second, "b after the limit was raised to 2")
	if got.err != nil {
		t.Fatal(got.err)
	}
	st, err := semaphore.Inspect(ctx, srv.Client, "deploys")
	if err != nil || st.Limit != 2 || len(st.Holders) != 2 {
		t.Fatalf("Inspect = %+v %v, want limit 2 with two holders", st, err)
	}
	_ = got.p.Release(ctx)
	_ = pa.Release(ctx)
}
