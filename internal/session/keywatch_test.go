package session

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
)

// A kept watch is taken up by the next wait on the same key (and prefix),
// is cancelled if nobody takes it up within keepWatchFor, makes room for a
// newer one beyond maxKeptWatches, and ends with the session.
func TestKeptWatches(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, srv.Client, Config{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	closed := func(w *KeyWatch, within time.Duration) bool {
		timeout := time.After(within)
		for {
			select {
			case _, ok := <-w.Ch:
				if !ok {
					return true
				}
			case <-timeout:
				return false
			}
		}
	}

	created := func(w *KeyWatch) {
		t.Helper()
		wr := <-w.Ch
		if !wr.Created {
			t.Fatalf("first response of the watch on %s: %+v", w.Key, wr)
		}
		w.Created, w.From = true, wr.Header.Revision
	}
	w := s.WatchKey("kw/a", false, 0)
	created(w)
	s.KeepWatch(w, true)
	if got := s.WatchKey("kw/a", false, w.From-1); got == w {
		t.Fatal("a watch created after a wait's read was taken up by it")
	} else {
		got.Stop()
	}
	if got := s.WatchKey("kw/a", true, w.From); got == w {
		t.Fatal("a prefix watch was served by a single key's")
	} else {
		got.Stop()
	}
	if got := s.WatchKey("kw/a", false, w.From); got != w {
		t.Fatal("the kept watch was not taken up")
	}
	s.KeepWatch(w, true)
	if !closed(w, keepWatchFor+5*time.Second) {
		t.Fatalf("a kept watch not taken up still open after %v", keepWatchFor+5*time.Second)
	}
	if got := s.WatchKey("kw/a", false, w.From); got == w {
		t.Fatal("an expired watch was taken up")
	} else {
		got.Stop()
	}

	// A watch from a revision serves waits reading at or after it.
	aw := s.WatchKeyAfter("kw/b", 100)
	s.KeepWatch(aw, true)
	if got := s.WatchKeyAfter("kw/b", 99); got == aw {
		t.Fatal("a watch from revision 101 served a wait that read at 99")
	} else {
		got.Stop()
	}
	if got := s.WatchKeyAfter("kw/b", 150); got != aw {
		t.Fatal("a watch from revision 101 did not serve a wait that read at 150")
	}
	aw.Stop()

	var kept []*KeyWatch
	for i := range maxKeptWatches + 1 {
		kw := s.WatchKeyAfter(fmt.Sprintf("kw/%d", i), 1)
		s.KeepWatch(kw, true)
		kept = append(kept, kw)
	}
	s.mu.Lock()
	n, oldest := len(s.keptWatches), s.keptWatches[0]
	s.mu.Unlock()
	if n != maxKeptWatches || oldest != kept[1] {
		t.Fatalf("%d watches kept, the oldest on %s; want %d, the oldest on %s", n, oldest.Key, maxKeptWatches, kept[1].Key)
	}
	if !closed(kept[0], 5*time.Second) {
		t.Fatal("the watch that made room is still open")
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, kw := range kept[1:] {
		if !closed(kw, 5*time.Second) {
			t.Fatalf("kept watch on %s open after the session closed", kw.Key)
		}
	}
}

// A kept watch from which a wait read events up to some revision is not
// given to a wait whose last read is older: it would miss the events
// between (two waits of one session watch the same key: one's gate is the
// other's key ahead).
func TestKeptWatchNotGivenBehindWhatItDelivered(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, srv.Client, Config{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	w := s.WatchKeyAfter("kw/k", 10)
	w.Saw(&clientv3.WatchResponse{Events: []*clientv3.Event{{Kv: &mvccpb.KeyValue{ModRevision: 50}}}})
	s.KeepWatch(w, true)
	if got := s.WatchKeyAfter("kw/k", 40); got == w {
		t.Fatal("a wait whose last read was at 40 took a watch that delivered up to 50")
	} else {
		got.Stop()
	}
	if got := s.WatchKeyAfter("kw/k", 60); got != w {
		t.Fatal("a wait whose last read was at 60 did not take the kept watch")
	}
	w.Stop()
}
