package line_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/line"
)

// A create whose answer was lost can land after the failing call deleted
// its key: the server runs the requests of one connection concurrently, so
// the delete can overtake it. The key would then sit in its line under a
// live session, holding everyone behind it until the session ends. The
// session deletes such a late key and never reuses its name.
func TestStrayCreateLandingLateIsRemoved(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client)
	key := s.LineKey("stray/")
	s.RemoveStray(key) // the create is still in flight

	// The create lands now, after the failing call's delete.
	if _, err := srv.Client.Put(ctx, key, "", clientv3.WithLease(s.Lease())); err != nil {
		t.Fatal(err)
	}
	waitNoKeys(t, srv.Client, key)
	if next := s.LineKey("stray/"); next == key {
		t.Fatalf("LineKey reused the stray name %s", key)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A Join whose request is cut off in flight, again and again, leaves no
// key in the line once the dust settles, and the lock it was after stays
// usable by others.
func TestJoinCutInFlightLeavesNoKey(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	px := embedtest.NewProxy(t, srv.Endpoints[0])
	c, err := px.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	s := newSession(t, c)
	px.Delay(50*time.Millisecond, 0)
	for i := range 10 {
		jctx, cancel := context.WithTimeout(ctx, 60*time.Millisecond+time.Duration(i)*5*time.Millisecond)
		key := s.LineKey("cut/")
		tk, err := line.Join(jctx, s, key, "", "cut/", 1)
		cancel()
		if err == nil {
			if err := tk.Delete(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	px.Undelay()
	waitNoKeys(t, srv.Client, "cut/", clientv3.WithPrefix())
}

// waitNoKeys fails t unless key (with opts) is gone within 5 s.
func waitNoKeys(t *testing.T, c *clientv3.Client, key string, opts ...clientv3.OpOption) {
	t.Helper()
	ctx := testCtx(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.Get(ctx, key, append(opts, clientv3.WithCountOnly())...)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys left at %s after 5s", resp.Count, key)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
