package line_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/line"
)

// A ticket that starts counting with nothing changed since its last read
// makes no read: its watch, created at that revision, sees every later
// deletion. Each wait used to re-read the line once its watch was created,
// a read per semaphore handoff.
func TestWaitCountReadsNothingWhenUnchanged(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	var reads atomic.Int64
	c := interceptedClient(t, srv, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if tr, ok := req.(*pb.TxnRequest); ok && len(tr.Success) == 1 {
			if r := tr.Success[0].GetRequestRange(); r != nil && r.MaxCreateRevision > 0 {
				reads.Add(1) // a ticket's read of the keys ahead
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	watchers0 := serverWatchers(t, srv)
	holders := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	s := newSession(t, c, concurrency.WithTTL(5*time.Second))
	awaitWatchers(t, srv, watchers0+2) // each client's anchor
	var ahead []*line.Ticket
	for range 3 {
		tk, err := line.Join(ctx, holders, holders.LineKey("cnt/"), "", "cnt/", 3)
		if err != nil {
			t.Fatal(err)
		}
		ahead = append(ahead, tk)
	}
	tk, err := line.Join(ctx, s, s.LineKey("cnt/"), "", "cnt/", 3)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Admitted(3) {
		t.Fatalf("admitted with %d ahead under a limit of 3", tk.Ahead())
	}
	done := make(chan error, 1)
	go func() { done <- tk.Wait(ctx, 3) }()
	awaitWatchers(t, srv, watchers0+3) // the wait's
	if err := ahead[1].Delete(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not admitted after one of the three ahead left")
	}
	if n := reads.Load(); n != 0 {
		t.Errorf("the ticket read the line %d times, want 0", n)
	}
}

func serverWatchers(t *testing.T, srv *embedtest.Server) float64 {
	t.Helper()
	g, err := srv.Gauges(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return g["etcd_debugging_mvcc_watcher_total"]
}

// awaitWatchers waits until the server has n watchers.
func awaitWatchers(t *testing.T, srv *embedtest.Server, n float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := serverWatchers(t, srv)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server has %v watchers after 10s, want %v", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
