package discovery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// A watcher cut off from etcd keeps serving what it knew and says it is
// stale; when etcd is reachable again it catches up with the changes it
// missed and is current again.
func TestWatcherServesStaleWhileCutOff(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	pc, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, pc, "api")
	r := newRegistry(t, srv.Client)
	a := register(t, ctx, r, "api", "a", "127.0.0.1:7001")
	eventually(t, 5*time.Second, "a listed", current(w, "a"))
	select {
	case <-w.Synced():
	default:
		t.Fatal("Synced not closed")
	}

	p.Blackhole()
	eventually(t, 5*time.Second, "stale after the cut", func() error {
		if !w.Stale() {
			return fmt.Errorf("not stale")
		}
		return nil
	})
	register(t, ctx, r, "api", "b", "127.0.0.1:7002")
	if err := a.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hasIDs(w, "a")(); err != nil {
		t.Fatalf("during the cut: %v", err)
	}

	p.Unblackhole()
	eventually(t, 20*time.Second, "caught up after the cut", current(w, "b"))
}

// Changes fires on every change; a record that does not parse is skipped.
func TestWatcherChangesAndBadRecords(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	if _, err := srv.Client.Put(ctx, "api/.instances/junk", "not json"); err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, srv.Client, "api")
	select {
	case <-w.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("not synced")
	}
	r := newRegistry(t, srv.Client)
	// Drain the notification of the snapshot, then expect one for a.
	eventually(t, 5*time.Second, "empty and current", current(w))
	select {
	case <-w.Changes():
	default:
	}
	register(t, ctx, r, "api", "a", "127.0.0.1:7001")
	deadline := time.After(5 * time.Second)
	for len(w.Instances()) == 0 {
		select {
		case <-w.Changes():
		case <-deadline:
			t.Fatal("no change notification for a")
		}
	}
	if got := ids(w.Instances()); len(got) != 1 || got[0] != "a" {
		t.Fatalf("instances %v", got)
	}
	if w.Revision() == 0 {
		t.Fatal("revision 0")
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_ = discovery.ErrClosed
}
