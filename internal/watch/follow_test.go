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
	clientv3 "go.etcd.io/etcd/client/v3"
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

// Every change to an existing key carries its previous value (PrevKv),
// even when etcd sends it without: its watch server fills in previous
// values only once it has recorded the watch's request for them, and a
// change made as the watch is created can come before that (a pubsub test
// failed so once in CI). Here the watches ask for none (NoServerPrevKV):
// the follower reads each at the revision before the change.
func TestFollowEventsCarryPrevKV(t *testing.T) {
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	defer watch.NoServerPrevKV()()
	for i := range 5 {
		key := fmt.Sprintf("cfg/k%d", i)
		fctx, cancel := context.WithCancel(ctx)
		st := watch.Follow(fctx, srv.Client, key, watch.Options{Key: true})
		if u := nextUpdate(t, st); !u.Snapshot {
			t.Fatalf("first update %+v, want a snapshot", u)
		}
		for _, v := range []string{"1", "2"} {
			if _, err := srv.Client.Put(ctx, key, v); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := srv.Client.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		var evs []*clientv3.Event
		for len(evs) < 3 {
			evs = append(evs, nextUpdate(t, st).Events...)
		}
		cancel()
		if p := evs[0].PrevKv; p != nil {
			t.Fatalf("round %d: the first put (a create) has a previous value %v", i, p)
		}
		if p := evs[1].PrevKv; p == nil || string(p.Value) != "1" {
			t.Fatalf("round %d: the second put's previous value %v, want 1", i, p)
		}
		if p := evs[2].PrevKv; p == nil || string(p.Value) != "2" {
			t.Fatalf("round %d: the delete's previous value %v, want 2", i, p)
		}
	}
}
