package session

import (
	"context"
	"testing"
	"time"

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

	w := s.WatchKey("kw/a", false)
	s.KeepWatch(w, true)
	if got := s.WatchKey("kw/a", true); got == w {
		t.Fatal("a prefix watch was served by a single key's")
	} else {
		got.Stop()
	}
	if got := s.WatchKey("kw/a", false); got != w {
		t.Fatal("the kept watch was not taken up")
	}
	s.KeepWatch(w, true)
	if !closed(w, keepWatchFor+5*time.Second) {
		t.Fatalf("a kept watch not taken up still open after %v", keepWatchFor+5*time.Second)
	}
	if got := s.WatchKey("kw/a", false); got == w {
		t.Fatal("an expired watch was taken up")
	} else {
		got.Stop()
	}

	var kept []*KeyWatch
	for _, k := range []string{"kw/1", "kw/2", "kw/3", "kw/4", "kw/5"} {
		kw := s.WatchKey(k, false)
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
