package embedtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// checkStats does known work on srv and checks that Stats counts it.
func checkStats(t *testing.T, srv *Server) ServerStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	wch := srv.Client.Watch(wctx, "stats/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if wr := <-wch; !wr.Created {
		t.Fatalf("watch not created: %v", wr.Err())
	}
	const puts = 200
	for i := range puts {
		if _, err := srv.Client.Put(ctx, fmt.Sprintf("stats/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	for got := 0; got < puts; {
		wr := <-wch
		if wr.Err() != nil {
			t.Fatal(wr.Err())
		}
		got += len(wr.Events)
	}
	stop()
	after, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before)
	if d.Unary < puts || d.Unary > puts+10 {
		t.Errorf("unary requests = %d, want about %d", d.Unary, puts)
	}
	if d.WatchRequests < 1 {
		t.Errorf("watch requests = %d, want the create", d.WatchRequests)
	}
	if d.Events != puts {
		t.Errorf("events = %d, want %d", d.Events, puts)
	}
	if d.WatchResponses < 2 || d.WatchResponses > puts+2 {
		t.Errorf("watch responses = %d, want 2..%d", d.WatchResponses, puts+2)
	}
	return d
}

func TestServerStatsEmbedded(t *testing.T) {
	RequireEmbedded(t, "counts one member's requests")
	checkStats(t, Start(t, NoFsync()))
}

func TestServerStatsOwnProcess(t *testing.T) {
	RequireEmbedded(t, "runs a server process of its own")
	bin := requireBinary(t)
	srv := Start(t, OwnProcess(bin))
	d := checkStats(t, srv)
	if d.CPU <= 0 || d.Client <= 0 {
		t.Errorf("server CPU = %v, client CPU = %v for 200 fsynced puts, want both > 0", d.CPU, d.Client)
	}
	if srv.proc == nil {
		t.Fatal("OwnProcess server runs inside the test")
	}
}

// Gauges reads the server's watcher count: one more while a watch is open.
func TestGaugesCountWatchers(t *testing.T) {
	RequireEmbedded(t, "reads one member's gauges")
	srv := Start(t, NoFsync())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := srv.Gauges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	if wr := <-srv.Client.Watch(wctx, "gauges", clientv3.WithCreatedNotify()); !wr.Created {
		t.Fatalf("watch not created: %v", wr.Err())
	}
	after, err := srv.Gauges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const w = "etcd_debugging_mvcc_watcher_total"
	if after[w] != before[w]+1 {
		t.Fatalf("%s %v with a watch open, %v before", w, after[w], before[w])
	}
}
