package watch_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/stream"
	"github.com/concordkit/concord/internal/watch"
	"google.golang.org/grpc/connectivity"
)

func nextUpdate(t *testing.T, st *stream.Stream[watch.Update]) watch.Update {
	t.Helper()
	select {
	case u, ok := <-st.C():
		if !ok {
			t.Fatalf("stream closed: %v", st.Err())
		}
		return u
	case <-time.After(60 * time.Second):
		t.Fatal("no update within 60s")
		return watch.Update{}
	}
}

func TestFollowSnapshotThenEvents(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx, cancel := context.WithCancel(testCtx(t))
	if _, err := srv.Client.Put(ctx, "cfg/a", "1"); err != nil {
		t.Fatal(err)
	}
	st := watch.Follow(ctx, srv.Client, "cfg/", watch.Options{})
	u := nextUpdate(t, st)
	if !u.Snapshot || u.Resync || len(u.KVs) != 1 {
		t.Fatalf("first update %+v, want a snapshot of 1 key", u)
	}
	if _, err := srv.Client.Put(ctx, "cfg/b", "2"); err != nil {
		t.Fatal(err)
	}
	u = nextUpdate(t, st)
	if u.Snapshot || len(u.Events) != 1 || string(u.Events[0].Kv.Key) != "cfg/b" {
		t.Fatalf("second update %+v, want the put of cfg/b", u)
	}
	cancel()
	for range st.C() {
	}
	if !errors.Is(st.Err(), context.Canceled) {
		t.Fatalf("Err = %v", st.Err())
	}
}

// A follower cut off while the history it needs is compacted away resyncs
// with a snapshot instead of ending or skipping silently.
func TestFollowResyncsAfterCompaction(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st := watch.Follow(ctx, cut, "cfg/", watch.Options{})
	if u := nextUpdate(t, st); !u.Snapshot {
		t.Fatalf("first update %+v", u)
	}
	p.Blackhole()
	for i := range 5 {
		if _, err := srv.Client.Put(ctx, fmt.Sprintf("cfg/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	// Let the client's keepalive (10s + 2s) find the connection dead: a
	// blackhole drops data, so the old connection must not be reused.
	deadline := time.Now().Add(30 * time.Second)
	for cut.ActiveConnection().GetState() == connectivity.Ready {
		if time.Now().After(deadline) {
			t.Fatal("client never noticed the dead connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Unblackhole()
	healed := time.Now()
	defer func() { t.Logf("caught up %v after the heal", time.Since(healed)) }()
	seen := map[string]bool{}
	resynced := false
	for len(seen) < 5 {
		u := nextUpdate(t, st)
		if u.Snapshot {
			resynced = resynced || u.Resync
			clear(seen)
			for _, kv := range u.KVs {
				seen[string(kv.Key)] = true
			}
			continue
		}
		for _, ev := range u.Events {
			seen[string(ev.Kv.Key)] = true
		}
	}
	if !resynced {
		t.Fatal("history was compacted away but no resync snapshot came")
	}
}
