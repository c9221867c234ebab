package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

func TestValidation(t *testing.T) {
	for _, s := range []string{"", "a/b", ".hidden", "nul\x00", strings.Repeat("s", discovery.MaxNameBytes+1), "\xff"} {
		if err := discovery.ValidateService(s); !errors.Is(err, discovery.ErrInvalidService) {
			t.Errorf("ValidateService(%q) = %v, want ErrInvalidService", s, err)
		}
		in := discovery.Instance{ID: s, Addr: "127.0.0.1:80"}
		if err := in.Validate(); !errors.Is(err, discovery.ErrInvalidID) {
			t.Errorf("Validate(ID %q) = %v, want ErrInvalidID", s, err)
		}
	}
	for _, a := range []string{"", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:http", "127.0.0.1:0", "127.0.0.1:65536", "::1:80"} {
		if err := discovery.ValidateAddr(a); !errors.Is(err, discovery.ErrInvalidAddr) {
			t.Errorf("ValidateAddr(%q) = %v, want ErrInvalidAddr", a, err)
		}
	}
	for _, a := range []string{"127.0.0.1:80", "[::1]:443", "db.internal:5432"} {
		if err := discovery.ValidateAddr(a); err != nil {
			t.Errorf("ValidateAddr(%q) = %v", a, err)
		}
	}
	in := discovery.Instance{ID: "a", Addr: "127.0.0.1:80", Weight: -1}
	if err := in.Validate(); !errors.Is(err, discovery.ErrInvalidWeight) {
		t.Errorf("negative weight: %v", err)
	}
	in = discovery.Instance{ID: "a", Addr: "127.0.0.1:80", Metadata: map[string]string{"big": strings.Repeat("x", 2<<20)}}
	if err := in.Validate(); !errors.Is(err, discovery.ErrRecordTooLarge) {
		t.Errorf("huge metadata: %v", err)
	}
	if _, err := discovery.NewRegistry(nil, discovery.WithTTL(1500*time.Millisecond)); !errors.Is(err, concurrency.ErrInvalidTTL) {
		t.Errorf("TTL 1.5s: %v", err)
	}
	if _, err := discovery.NewWatcher(nil, "a/b"); !errors.Is(err, discovery.ErrInvalidService) {
		t.Errorf("NewWatcher(a/b): %v", err)
	}
}

// Instances registered, updated and deregistered through one Registry show
// up in every watcher; all records share the Registry's one lease.
func TestRegisterUpdateDeregister(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	r := newRegistry(t, srv.Client)
	var ws []*discovery.Watcher
	for range 3 {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, newWatcher(t, c, "api"))
	}
	a := register(t, ctx, r, "api", "a", "127.0.0.1:7001")
	b := register(t, ctx, r, "api", "b", "127.0.0.1:7002")
	register(t, ctx, r, "other", "a", "127.0.0.1:7003")
	for i, w := range ws {
		eventually(t, 5*time.Second, fmt.Sprintf("watcher %d sees a, b", i), current(w, "a", "b"))
	}
	la, err := leaseOf(ctx, srv.Client, a.Key())
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := leaseOf(ctx, srv.Client, b.Key())
	if la != lb || la != r.Lease() {
		t.Fatalf("leases %x, %x, registry %x: want one shared lease", la, lb, r.Lease())
	}

	upd := discovery.Instance{ID: "a", Addr: "127.0.0.1:7011", Metadata: map[string]string{"zone": "z1"}, Weight: 5, Draining: true}
	if err := a.Update(ctx, upd); err != nil {
		t.Fatal(err)
	}
	if err := a.Update(ctx, discovery.Instance{ID: "x", Addr: "127.0.0.1:1"}); !errors.Is(err, discovery.ErrIDChanged) {
		t.Fatalf("Update changing ID: %v", err)
	}
	for i, w := range ws {
		eventually(t, 5*time.Second, fmt.Sprintf("watcher %d sees the update", i), func() error {
			if got := w.Instances()[0]; !got.Equal(upd) {
				return fmt.Errorf("got %+v", got)
			}
			return nil
		})
	}

	if err := a.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Deregister(ctx); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	if !errors.Is(a.Err(), discovery.ErrDeregistered) {
		t.Fatalf("Err after Deregister: %v", a.Err())
	}
	if err := a.Update(ctx, upd); !errors.Is(err, discovery.ErrDeregistered) {
		t.Fatalf("Update after Deregister: %v", err)
	}
	for i, w := range ws {
		eventually(t, 5*time.Second, fmt.Sprintf("watcher %d sees a gone", i), current(w, "b"))
	}
	// The ID is free again.
	register(t, ctx, r, "api", "a", "127.0.0.1:7001")
	eventually(t, 5*time.Second, "a back", current(ws[0], "a", "b"))

	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !errors.Is(b.Err(), discovery.ErrClosed) {
		t.Fatalf("registration Err after Close: %v", b.Err())
	}
	for i, w := range ws {
		eventually(t, 5*time.Second, fmt.Sprintf("watcher %d sees all gone", i), current(w))
	}
	if _, err := r.Register(ctx, "api", discovery.Instance{ID: "c", Addr: "127.0.0.1:1"}); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Register after Close: %v", err)
	}
}

// An ID live under another Registry is refused; Deregister of a stale
// registration never deletes the new owner's record.
func TestDuplicateIDAndForeignRecord(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	r1, r2 := newRegistry(t, srv.Client), newRegistry(t, srv.Client)
	g := register(t, ctx, r1, "api", "a", "127.0.0.1:7001")
	if _, err := r2.Register(ctx, "api", discovery.Instance{ID: "a", Addr: "127.0.0.1:7002"}); !errors.Is(err, discovery.ErrAlreadyRegistered) {
		t.Fatalf("second owner: %v", err)
	}
	if _, err := r1.Register(ctx, "api", discovery.Instance{ID: "a", Addr: "127.0.0.1:7002"}); !errors.Is(err, discovery.ErrAlreadyRegistered) {
		t.Fatalf("same registry twice: %v", err)
	}
	// A brand-new Registry races its first lease's re-put against
	// Register's own write: either way the answer is ErrAlreadyRegistered.
	for i := range 10 {
		r3 := newRegistry(t, srv.Client)
		if _, err := r3.Register(ctx, "api", discovery.Instance{ID: "a", Addr: "127.0.0.1:7003"}); !errors.Is(err, discovery.ErrAlreadyRegistered) {
			t.Fatalf("new registry %d: %v", i, err)
		}
	}
	// Someone replaces the record by hand; Deregister leaves theirs alone.
	if _, err := srv.Client.Delete(ctx, g.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, g.Key(), `{"addr":"127.0.0.1:9999"}`); err != nil {
		t.Fatal(err)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client.Get(ctx, g.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("foreign record deleted: %v %v", resp, err)
	}
}

// The package-level Register has a lease of its own; Deregister closes it.
func TestPackageRegister(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	w := newWatcher(t, srv.Client, "solo")
	g, err := discovery.Register(ctx, srv.Client, "solo", discovery.Instance{ID: "s1", Addr: "127.0.0.1:7001"}, discovery.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "s1 listed", current(w, "s1"))
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "s1 gone", current(w))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := discovery.Register(cctx, srv.Client, "solo", discovery.Instance{ID: "s2", Addr: "127.0.0.1:7002"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Register with a cancelled context: %v", err)
	}
	resp, err := srv.Client.Get(ctx, "solo/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("keys left behind: %v %v", resp.Kvs, err)
	}
}

// A revoked lease is replaced and every registration put back under the new
// one, with its latest update.
func TestReregisterAfterRevoke(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	r := newRegistry(t, srv.Client)
	w := newWatcher(t, srv.Client, "api")
	a := register(t, ctx, r, "api", "a", "127.0.0.1:7001")
	register(t, ctx, r, "api", "b", "127.0.0.1:7002")
	eventually(t, 5*time.Second, "a, b listed", current(w, "a", "b"))
	old := r.Lease()
	tok := a.Token()
	oldGuard := a.Guard()
	if _, err := oldGuard.Do(ctx, clientv3.OpPut("api-config", "v1")); err != nil {
		t.Fatalf("guarded write while registered: %v", err)
	}
	if _, err := srv.Client.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "re-registered under a new lease", func() error {
		for _, key := range []string{"api/.instances/a", "api/.instances/b"} {
			l, err := leaseOf(ctx, srv.Client, key)
			if err != nil {
				return err
			}
			if l == old {
				return fmt.Errorf("%s still under the old lease", key)
			}
		}
		return nil
	})
	eventually(t, 5*time.Second, "a, b listed again", current(w, "a", "b"))
	if a.Token() <= tok {
		t.Fatalf("token %d after re-registration, was %d", a.Token(), tok)
	}
	if a.Err() != nil {
		t.Fatalf("registration ended: %v", a.Err())
	}
	if _, err := oldGuard.Do(ctx, clientv3.OpPut("api-config", "v2")); !errors.Is(err, concurrency.ErrNotHeld) {
		t.Fatalf("guarded write of the lost record: %v, want ErrNotHeld", err)
	}
	if _, err := a.Guard().Do(ctx, clientv3.OpPut("api-config", "v2")); err != nil {
		t.Fatalf("guarded write of the new record: %v", err)
	}
	// Updates still work under the new lease.
	if err := a.Update(ctx, discovery.Instance{ID: "a", Addr: "127.0.0.1:7001", Draining: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "update seen", func() error {
		if !w.Instances()[0].Draining {
			return fmt.Errorf("a not draining")
		}
		return nil
	})
}

// A registry cut off from etcd loses its records within the TTL, in every
// watcher, and registers them again once it can reach etcd.
func TestLeaseExpiryWhenCutOff(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	pc, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, pc)
	stay := newRegistry(t, srv.Client)
	register(t, ctx, r, "api", "cut", "127.0.0.1:7001")
	register(t, ctx, stay, "api", "stay", "127.0.0.1:7002")
	var ws []*discovery.Watcher
	for range 2 {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, newWatcher(t, c, "api"))
	}
	for i, w := range ws {
		eventually(t, 5*time.Second, fmt.Sprintf("watcher %d lists both", i), current(w, "cut", "stay"))
	}
	p.Blackhole()
	start := time.Now()
	for i, w := range ws {
		eventually(t, ttl+3*time.Second, fmt.Sprintf("watcher %d drops the cut-off instance", i), current(w, "stay"))
	}
	t.Logf("dropped %v after the cut (TTL %v)", time.Since(start), ttl)
	// Keep it cut off a while longer: the grants of new leases sent
	// meanwhile are lost with the connection and never answered.
	time.Sleep(3 * time.Second)
	p.Unblackhole()
	healed := time.Now()
	for i, w := range ws {
		eventually(t, ttl+8*time.Second, fmt.Sprintf("watcher %d lists it again", i), current(w, "cut", "stay"))
	}
	t.Logf("listed again %v after the network healed", time.Since(healed))
}

// Register waits for etcd: with etcd unreachable it returns ctx's error and
// leaves nothing behind; once etcd is back it succeeds. Close does not hang
// while etcd is unreachable.
func TestRegisterWhileUnreachable(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	pc, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	r := newRegistry(t, pc)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = r.Register(short, "api", discovery.Instance{ID: "a", Addr: "127.0.0.1:7001"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register while unreachable: %v", err)
	}
	p.Unblackhole()
	w := newWatcher(t, srv.Client, "api")
	register(t, ctx, r, "api", "a", "127.0.0.1:7001")
	eventually(t, 5*time.Second, "a listed", current(w, "a"))

	r2 := newRegistry(t, pc)
	p.Blackhole()
	start := time.Now()
	if err := r2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v while unreachable", d)
	}
	p.Unblackhole()
}

// A write that took the Registry's session before that session was lost
// (say a Register racing a leader election that outlasted the renew
// deadline) must not land after the re-registration under the next lease: it
// would move the record back to the lost lease, and the record would go when
// that lease expires, with nothing left to register it again.
func TestStaleSessionWriteRefused(t *testing.T) {
	ctx, srv, r, s1, g := writtenUnderFirstSession(t)
	// Lost to this process while its lease lives on in etcd until its TTL,
	// as after a renew deadline the server did not hear of.
	s1.Orphan()
	reregistered(t, ctx, srv.Client, r, g, s1.Lease())
	if err := discovery.WriteUnder(ctx, g, s1); err == nil {
		t.Error("a write under the lost session succeeded")
	}
	l, err := leaseOf(ctx, srv.Client, g.Key())
	if err != nil {
		t.Fatal(err)
	}
	if l != r.Lease() {
		t.Fatalf("record under %x after the stale write, want the registry's %x", l, r.Lease())
	}
	time.Sleep(ttl + time.Second) // the lost lease expires
	if _, err := leaseOf(ctx, srv.Client, g.Key()); err != nil {
		t.Fatalf("after the lost lease expired: %v", err)
	}
}

// A Register whose first write landed but whose answer was lost (its ctx
// ended first) leaves no record behind: at once if etcd answers within the
// clean-up's 2 s, else in the background once it does.
func TestFailedRegisterLeavesNoRecord(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	for _, c := range []struct {
		name    string
		delay   time.Duration // of every answer
		timeout time.Duration // Register's
	}{
		{"answered late", 300 * time.Millisecond, 250 * time.Millisecond},
		{"clean-up cut short too", 2500 * time.Millisecond, time.Second},
	} {
		p := embedtest.NewProxy(t, srv.Endpoints[0])
		pc, err := p.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		r, err := discovery.NewRegistry(pc, discovery.WithTTL(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		register(t, ctx, r, "api", "warm", "127.0.0.1:7001") // the lease is granted
		p.DelayAnswers(c.delay, 0)
		short, cancel := context.WithTimeout(ctx, c.timeout)
		_, err = r.Register(short, "api", discovery.Instance{ID: "late", Addr: "127.0.0.1:7002"})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Register = %v, want DeadlineExceeded", c.name, err)
		}
		p.Undelay()
		eventually(t, 10*time.Second, c.name+": no record left", func() error {
			if l, err := leaseOf(ctx, srv.Client, "api/.instances/late"); err == nil {
				return fmt.Errorf("record under lease %x", l)
			}
			return nil
		})
		// The ID is free again in this Registry.
		eventually(t, 5*time.Second, c.name+": registered again", func() error {
			g, err := r.Register(ctx, "api", discovery.Instance{ID: "late", Addr: "127.0.0.1:7002"})
			if err != nil {
				return err
			}
			return g.Deregister(ctx)
		})
		if err := r.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// An update sent under the lease the record was under, that lands only after
// the re-registration moved the record to the next lease (a request delayed
// in flight), is refused: it would move the record back to the lost lease.
func TestLateUpdateFenced(t *testing.T) {
	ctx, srv, r, s1, g := writtenUnderFirstSession(t)
	late := discovery.PrepareUpdate(ctx, g, s1, discovery.Instance{ID: "a", Addr: "127.0.0.1:7009"})
	s1.Orphan()
	reregistered(t, ctx, srv.Client, r, g, s1.Lease())
	if ok, err := late(); ok || err != nil {
		t.Fatalf("late update: succeeded %v, err %v; want refused", ok, err)
	}
	if l, err := leaseOf(ctx, srv.Client, g.Key()); err != nil || l != r.Lease() {
		t.Fatalf("record under %x (%v), want the registry's %x", l, err, r.Lease())
	}
}

// reregistered waits until g's record is under r's current lease, not lost.
func reregistered(t *testing.T, ctx context.Context, c *clientv3.Client, r *discovery.Registry, g *discovery.Registration, lost clientv3.LeaseID) {
	t.Helper()
	eventually(t, 10*time.Second, "registered again under the next lease", func() error {
		l, err := leaseOf(ctx, c, g.Key())
		if err != nil {
			return err
		}
		if now := r.Lease(); l == lost || l != now {
			return fmt.Errorf("record under %x, registry %x, lost %x", l, now, lost)
		}
		return nil
	})
}

// writtenUnderFirstSession starts a server and a Registry and writes
// instance "a" under the Registry's first session, as Register does.
func writtenUnderFirstSession(t *testing.T) (context.Context, *embedtest.Server, *discovery.Registry, *concurrency.Session, *discovery.Registration) {
	t.Helper()
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	r := newRegistry(t, srv.Client)
	s1, err := discovery.SessionOf(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	g := discovery.Pending(r, "api", discovery.Instance{ID: "a", Addr: "127.0.0.1:7001"})
	if err := discovery.WriteUnder(ctx, g, s1); err != nil {
		t.Fatal(err)
	}
	return ctx, srv, r, s1, g
}
