package discovery_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/discovery"
)

// ttl is the lease TTL of the tests' registries.
const ttl = 2 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newRegistry(t *testing.T, c *clientv3.Client) *discovery.Registry {
	t.Helper()
	r, err := discovery.NewRegistry(c, discovery.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

func newWatcher(t *testing.T, c *clientv3.Client, service string) *discovery.Watcher {
	t.Helper()
	w, err := discovery.NewWatcher(c, service, fastProbe()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

func fastProbe() []discovery.WatchOption {
	return []discovery.WatchOption{
		discovery.WithProbeInterval(100 * time.Millisecond),
		discovery.WithProbeTimeout(500 * time.Millisecond),
	}
}

func register(t *testing.T, ctx context.Context, r *discovery.Registry, service, id, addr string) *discovery.Registration {
	t.Helper()
	g, err := r.Register(ctx, service, discovery.Instance{ID: id, Addr: addr})
	if err != nil {
		t.Fatalf("Register %s: %v", id, err)
	}
	return g
}

// eventually polls cond every 10ms until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ids(insts []discovery.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID
	}
	return out
}

// hasIDs checks that w lists exactly want (sorted), whether stale or not.
func hasIDs(w *discovery.Watcher, want ...string) func() error {
	return func() error {
		if got := ids(w.Instances()); !slices.Equal(got, want) {
			return fmt.Errorf("watcher lists %v, want %v", got, want)
		}
		return nil
	}
}

// current checks that w lists exactly want and is not stale.
func current(w *discovery.Watcher, want ...string) func() error {
	return func() error {
		if err := hasIDs(w, want...)(); err != nil {
			return err
		}
		if w.Stale() {
			return fmt.Errorf("watcher still stale")
		}
		return nil
	}
}

func leaseOf(ctx context.Context, c *clientv3.Client, key string) (clientv3.LeaseID, error) {
	resp, err := c.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%s: no record", key)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease), nil
}
