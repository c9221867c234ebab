package line_test

import (
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/session"
)

// A session reuses a line key's name once the key is deleted, so a lock
// taken over and over adds no new key names to etcd's index; live keys of
// one session never share a name; a resumed lease gets other names.
func TestLineKeysReused(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s := newSession(t, srv.Client, concurrency.WithTTL(5*time.Second))
	first, err := line.Join(ctx, s, s.LineKey("jobs/"), "", "jobs/", 1)
	if err != nil {
		t.Fatal(err)
	}
	second, err := line.Join(ctx, s, s.LineKey("jobs/"), "", "jobs/", 1)
	if err != nil {
		t.Fatal(err)
	}
	if first.Key() == second.Key() {
		t.Fatal("two live tickets of one session share a key")
	}
	names := map[string]bool{}
	for range 20 {
		if err := second.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		second, err = line.Join(ctx, s, s.LineKey("jobs/"), "", "jobs/", 1)
		if err != nil {
			t.Fatal(err)
		}
		names[second.Key()] = true
	}
	if len(names) != 1 {
		t.Fatalf("20 join/delete cycles used %d key names, want 1", len(names))
	}
	// A process resuming the lease must not collide with its own old keys.
	pub, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithLease(s.Lease()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Orphan()
	resumed := (*session.Session)(pub)
	if k := resumed.LineKey("jobs/"); k == first.Key() || k == second.Key() {
		t.Fatalf("resumed session reuses a live key name %q", k)
	}
}
