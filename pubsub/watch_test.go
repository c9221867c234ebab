package pubsub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

func watch(t *testing.T, ps *pubsub.Client, key string, opts ...pubsub.WatchOption) *pubsub.ConfigWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	w, err := ps.Watch(ctx, key, opts...)
	if err != nil {
		cancel()
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		for range w.C() {
		}
	})
	return w
}

func nextUpdate(t *testing.T, w *pubsub.ConfigWatch) pubsub.Update {
	t.Helper()
	select {
	case u, ok := <-w.C():
		if !ok {
			t.Fatalf("watch closed: %v", w.Err())
		}
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no update within 10s")
		return pubsub.Update{}
	}
}

func TestWatchKeyValueThenChanges(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	ctx := testCtx(t)
	if _, err := srv.Client.Put(ctx, "cfg/level", "info"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, "cfg/levelx", "not watched"); err != nil {
		t.Fatal(err)
	}
	w := watch(t, ps, "cfg/level")
	u := nextUpdate(t, w)
	if !u.Snapshot || u.Resync || len(u.KVs) != 1 || string(u.KVs[0].Value) != "info" {
		t.Fatalf("first update %+v, want a snapshot of level=info", u)
	}
	if _, err := srv.Client.Put(ctx, "cfg/level", "debug"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Delete(ctx, "cfg/level"); err != nil {
		t.Fatal(err)
	}
	var evs []*clientv3.Event
	for len(evs) < 2 {
		u := nextUpdate(t, w)
		if u.Snapshot {
			t.Fatalf("update %+v, want events", u)
		}
		evs = append(evs, u.Events...)
	}
	if evs[0].Type != clientv3.EventTypePut || string(evs[0].Kv.Value) != "debug" {
		t.Fatalf("first change %v, want level=debug", evs[0])
	}
	if evs[1].Type != clientv3.EventTypeDelete || string(evs[1].PrevKv.Value) != "debug" {
		t.Fatalf("second change %v, want the delete", evs[1])
	}
}

func TestWatchPrefix(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	ctx := testCtx(t)
	w := watch(t, ps, "cfg/", pubsub.WithPrefix())
	if u := nextUpdate(t, w); !u.Snapshot || len(u.KVs) != 0 {
		t.Fatalf("first update %+v, want an empty snapshot", u)
	}
	for i := range 3 {
		if _, err := srv.Client.Put(ctx, fmt.Sprintf("cfg/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	for seen < 3 {
		seen += len(nextUpdate(t, w).Events)
	}
}

// A watcher cut off while the history it needs is compacted away gets a
// fresh snapshot marked Resync, then the changes after it. One paused
// briefly with history intact resumes with the missed changes one by one.
func TestWatchResumeAndResync(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ps := newPubSub(t, cut, pubsub.WithStallTimeout(300*time.Millisecond))
	ctx := testCtx(t)
	put := func(v string) {
		t.Helper()
		if _, err := srv.Client.Put(ctx, "cfg/level", v); err != nil {
			t.Fatal(err)
		}
	}
	put("v0")
	w := watch(t, ps, "cfg/level")
	if u := nextUpdate(t, w); !u.Snapshot {
		t.Fatalf("first update %+v", u)
	}

	// Paused without compaction: every change, in order, no resync.
	p.Pause()
	put("v1")
	put("v2")
	waitPast(t, 600*time.Millisecond) // let the stall detector fire
	p.Unpause()
	var got []string
	for len(got) < 2 {
		u := nextUpdate(t, w)
		if u.Snapshot {
			t.Fatalf("update %+v, want events", u)
		}
		for _, ev := range u.Events {
			got = append(got, string(ev.Kv.Value))
		}
	}
	if fmt.Sprint(got) != "[v1 v2]" {
		t.Fatalf("changes %v, want [v1 v2]", got)
	}

	// Paused across a compaction: a Resync snapshot with the latest value.
	p.Pause()
	put("v3")
	put("v4")
	if _, err := srv.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	waitPast(t, 600*time.Millisecond)
	p.Unpause()
	u := nextUpdate(t, w)
	for !u.Snapshot {
		// Changes the old watch had already received may come first.
		u = nextUpdate(t, w)
	}
	if !u.Resync || len(u.KVs) != 1 || string(u.KVs[0].Value) != "v4" {
		t.Fatalf("update %+v, want a resync snapshot of v4", u)
	}
	put("v5")
	if u := nextUpdate(t, w); len(u.Events) != 1 || string(u.Events[0].Kv.Value) != "v5" {
		t.Fatalf("update %+v, want v5", u)
	}
}

// waitPast lets d of wall time pass: the fault must last longer than the
// stall timeout, which is the condition under test.
func waitPast(t *testing.T, d time.Duration) {
	t.Helper()
	time.Sleep(d)
}
