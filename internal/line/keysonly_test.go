package line_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/line"
)

// rangeLog records, for each range a client's Txns ask for, whether it asked
// for keys only.
type rangeLog struct {
	mu       sync.Mutex
	keysOnly []bool
}

func (l *rangeLog) take() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.keysOnly
	l.keysOnly = nil
	return out
}

func rangeLoggingClient(t *testing.T, srv *embedtest.Server, l *rangeLog) *clientv3.Client {
	return interceptedClient(t, srv, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if tr, ok := req.(*pb.TxnRequest); ok {
			l.mu.Lock()
			for _, op := range tr.Success {
				if r := op.GetRequestRange(); r != nil {
					l.keysOnly = append(l.keysOnly, r.KeysOnly)
				}
			}
			l.mu.Unlock()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// interceptedClient is a client of srv whose unary requests go through
// in: to record them, or to fail some before they reach the server.
func interceptedClient(t *testing.T, srv *embedtest.Server, in grpc.UnaryClientInterceptor) *clientv3.Client {
	t.Helper()
	c, err := srv.NewClientWith(grpc.WithChainUnaryInterceptor(in))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The line's reads (a Join's, the re-read when the key ahead goes while
// others are ahead, a window's) ask for keys only, which etcd 3.7 serves
// from its index without reading each key of the line from its database;
// JoinHead alone reads values, and its Head carries the holder's value.
func TestLineReadsAskForKeysOnly(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	var l rangeLog
	s := newSession(t, rangeLoggingClient(t, srv, &l), concurrency.WithTTL(5*time.Second))
	put := func(key, val string) {
		t.Helper()
		if _, err := srv.Client.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, wantKeysOnly bool, atLeast int) {
		t.Helper()
		got := l.take()
		if len(got) < atLeast {
			t.Fatalf("%s: %d reads of the line, want at least %d", what, len(got), atLeast)
		}
		for i, k := range got {
			if k != wantKeysOnly {
				t.Fatalf("%s: read %d asked keys only = %v, want %v", what, i, k, wantKeysOnly)
			}
		}
	}

	// n == 1: join behind three keys; the key ahead goes while two are
	// ahead (a re-read), then the rest.
	for i := range 3 {
		put(fmt.Sprintf("lk/k%d", i), "holder")
	}
	tk, err := line.Join(ctx, s, s.LineKey("lk/"), "v", "lk/", 1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tk.Wait(ctx, 1) }()
	time.Sleep(100 * time.Millisecond)
	for i := 2; i >= 0; i-- {
		if _, err := srv.Client.Delete(ctx, fmt.Sprintf("lk/k%d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	check("lock ticket", true, 2)
	if err := tk.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// n == 3 far back: a window and its gate.
	const n, ahead = 3, 20
	for i := range ahead {
		put(fmt.Sprintf("sk/k%02d", i), "")
	}
	st, err := line.Join(ctx, s, s.LineKey("sk/"), "", "sk/", n)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- st.Wait(ctx, n) }()
	time.Sleep(100 * time.Millisecond)
	var dels []clientv3.Op
	for i := range ahead {
		dels = append(dels, clientv3.OpDelete(fmt.Sprintf("sk/k%02d", i)))
	}
	if _, err := srv.Client.Txn(ctx).Then(dels...).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	check("semaphore ticket", true, 2)
	if err := st.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// JoinHead reads values: the head names its holder.
	put("hk/k0", "the holder")
	ht, err := line.JoinHead(ctx, s, s.LineKey("hk/"), "v", "hk/")
	if err != nil {
		t.Fatal(err)
	}
	check("JoinHead", false, 1)
	head, err := ht.Head(ctx)
	if err != nil || head == nil || string(head.Value) != "the holder" {
		t.Fatalf("Head = %v, %v; want the holder's key with its value", head, err)
	}
	if len(l.take()) != 0 {
		t.Fatal("Head read the line again after JoinHead")
	}
	ht.Abandon()
}

// A ticket two behind the head watches the head too (its gate): when the
// head goes it reads the line while the key ahead still holds, so when that
// key goes it is admitted with no read between the release and its grant.
func TestGateReadsBeforeTheHandoff(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	var l rangeLog
	s := newSession(t, rangeLoggingClient(t, srv, &l), concurrency.WithTTL(5*time.Second))
	for _, k := range []string{"g/head", "g/next"} {
		if _, err := srv.Client.Put(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	tk, err := line.Join(ctx, s, s.LineKey("g/"), "", "g/", 1)
	if err != nil {
		t.Fatal(err)
	}
	l.take()
	done := make(chan error, 1)
	go func() { done <- tk.Wait(ctx, 1) }()
	time.Sleep(100 * time.Millisecond)
	if _, err := srv.Client.Delete(ctx, "g/head"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		n := len(l.keysOnly)
		l.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no read after the gate went")
		}
	}
	time.Sleep(50 * time.Millisecond)
	l.take()
	if _, err := srv.Client.Delete(ctx, "g/next"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if reads := l.take(); len(reads) != 0 {
		t.Fatalf("%d reads between the release of the key ahead and the grant, want 0", len(reads))
	}
	if err := tk.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}
