package embedtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testTimeout bounds each test's calls to etcd.
const testTimeout = 20 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually calls f until it returns nil or d passes, and returns f's last
// error.
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// getValue reads key with a per-attempt timeout, so a stuck connection
// fails the attempt instead of the test.
func getValue(ctx context.Context, c *clientv3.Client, key string, opts ...clientv3.OpOption) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key, opts...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", errors.New("key not found")
	}
	return string(resp.Kvs[0].Value), nil
}

func wantValue(ctx context.Context, c *clientv3.Client, key, want string, opts ...clientv3.OpOption) func() error {
	return func() error {
		got, err := getValue(ctx, c, key, opts...)
		if err != nil {
			return err
		}
		if got != want {
			return errors.New("got " + key + "=" + got + ", want " + want)
		}
		return nil
	}
}

func TestServerCloseTwice(t *testing.T) {
	ctx := testContext(t)
	s, err := New(FastTicks())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := wantValue(ctx, s.Client, "k", "v")(); err != nil {
		t.Fatal(err)
	}
	dir := s.tmp
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s still there after Close (stat: %v)", dir, err)
	}
	if c, err := s.NewClient(); err == nil {
		_ = c.Close()
		t.Error("NewClient after Close succeeded")
	}
}

// WithClientPort serves on the port asked for, and a second server cannot
// share it (a reservation's SO_REUSEPORT would let it).
func TestWithClientPort(t *testing.T) {
	ctx := testContext(t)
	ps, err := reservePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := ps.list[0]
	ps.free()
	s, err := New(FastTicks(), WithClientPort(port))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if want := fmt.Sprintf("http://127.0.0.1:%d", port); len(s.Endpoints) != 1 || s.Endpoints[0] != want {
		t.Fatalf("endpoints %v, want %s", s.Endpoints, want)
	}
	if _, err := s.Client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if s2, err := New(FastTicks(), WithClientPort(port)); err == nil {
		_ = s2.Close()
		t.Fatal("a second server started on the same client port")
	}
}

func TestProxyBlackhole(t *testing.T) {
	ctx := testContext(t)
	s := Start(t, FastTicks())
	p := NewProxy(t, s.Endpoints[0])
	pc, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Put(ctx, "k", "v1"); err != nil {
		t.Fatalf("put through proxy: %v", err)
	}

	p.Blackhole()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = pc.Get(short, "k")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get through blackholed proxy: %v, want %v", err, context.DeadlineExceeded)
	}
	if _, err := s.Client.Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("direct put during blackhole: %v", err)
	}

	p.Unblackhole()
	if err := eventually(10*time.Second, wantValue(ctx, pc, "k", "v2")); err != nil {
		t.Fatalf("get through proxy after Unblackhole: %v", err)
	}
}

// A blackhole loses no data from a stream that goes on afterwards: a watch
// through the proxy sees every change made while it was cut off (the
// connection is ended, and the client's watch resumes where it was), as
// over TCP, where a connection never skips part of its stream.
func TestProxyBlackholeLosesNoStreamData(t *testing.T) {
	ctx := testContext(t)
	s := Start(t, FastTicks())
	p, pc := NewProxyClient(t, s.Endpoints[0])
	wch := pc.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if wr := <-wch; !wr.Created {
		t.Fatalf("watch not created: %v", wr.Err())
	}
	const n = 20
	put := func(i int) {
		if _, err := s.Client.Put(ctx, fmt.Sprintf("w/%02d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	put(0)
	p.Blackhole()
	for i := 1; i < n-1; i++ {
		put(i)
	}
	time.Sleep(200 * time.Millisecond) // the server sends them meanwhile
	p.Unblackhole()
	put(n - 1)
	var got []string
	deadline := time.After(15 * time.Second)
	for len(got) < n {
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			for _, ev := range wr.Events {
				got = append(got, string(ev.Kv.Key))
			}
		case <-deadline:
			t.Fatalf("after the blackhole the watch saw %d of %d changes: %v", len(got), n, got)
		}
	}
	for i, k := range got {
		if want := fmt.Sprintf("w/%02d", i); k != want {
			t.Fatalf("change %d is %s, want %s (saw %v)", i, k, want, got)
		}
	}
}

func TestCompact(t *testing.T) {
	ctx := testContext(t)
	s := Start(t, FastTicks())
	first, err := s.Client.Put(ctx, "k", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Put(ctx, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev <= first.Header.Revision {
		t.Fatalf("compacted at %d, want past %d", rev, first.Header.Revision)
	}
	if _, err := s.Client.Get(ctx, "k", clientv3.WithRev(first.Header.Revision)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("get at compacted revision: %v, want %v", err, rpctypes.ErrCompacted)
	}
	if err := wantValue(ctx, s.Client, "k", "v2")(); err != nil {
		t.Fatal(err)
	}
}

// WithTLS serves https with client certificates required; the Server's own
// clients present the generated client certificate, and a client without
// one is refused.
func TestTLS(t *testing.T) {
	f, err := GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := Start(t, FastTicks(), WithTLS(f))
	ctx := testContext(t)
	if _, err := s.Client.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	plain, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := plain.Get(short, "k"); err == nil {
		t.Fatal("a client without TLS was served")
	}
}
