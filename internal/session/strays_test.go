package session

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
)

// Many failed joins cost the session one goroutine and a bounded number of
// watches, not one of each per key; a late create on a key past the watch
// bound is still deleted, by the next sweep.
func TestStraysBounded(t *testing.T) {
	defer func(watchFor, sweep time.Duration, n int) {
		strayWatchFor, straySweep, maxStrayWatches = watchFor, sweep, n
	}(strayWatchFor, straySweep, maxStrayWatches)
	maxStrayWatches, straySweep, strayWatchFor = 4, 200*time.Millisecond, time.Minute
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, srv.Client, Config{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())

	before := runtime.NumGoroutine()
	var keys []string
	for i := range 100 {
		key := s.LineKey(fmt.Sprintf("stray%d/", i%3))
		keys = append(keys, key)
		s.RemoveStray(key)
	}
	// Let the watcher take them all in.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		left := len(s.strayKeys)
		s.mu.Unlock()
		if left == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if grown := runtime.NumGoroutine() - before; grown > 20 {
		t.Fatalf("100 stray keys cost %d goroutines", grown)
	}
	// Both a watched key and a swept one are deleted when a create lands late.
	for _, key := range []string{keys[0], keys[99]} {
		if _, err := srv.Client.Put(ctx, key, "", clientv3.WithLease(s.Lease())); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{keys[0], keys[99]} {
		waitGone(t, srv.Client, key, 5*time.Second)
	}
}

func waitGone(t *testing.T, c *clientv3.Client, key string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(context.Background(), key, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after %v", key, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
