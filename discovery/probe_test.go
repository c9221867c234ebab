package discovery_test

import (
	"context"
	"fmt"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

// probeLog records a client's staleness probes, by service: the reads of a
// service's newest mod revision (full: they range over every key of the
// service) and the one-key reads that only check etcd answers.
type probeLog struct {
	mu    sync.Mutex
	full  map[string][]time.Time
	cheap map[string]int
}

func (l *probeLog) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if r, ok := req.(*pb.RangeRequest); ok && strings.HasSuffix(string(r.Key), "/.instances/") {
		svc := path.Base(strings.TrimSuffix(string(r.Key), "/.instances/")) // past a test prefix
		l.mu.Lock()
		switch {
		case r.SortTarget == pb.RangeRequest_MOD:
			l.full[svc] = append(l.full[svc], time.Now())
		case len(r.RangeEnd) == 0:
			l.cheap[svc]++
		}
		l.mu.Unlock()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (l *probeLog) counts(svc string) (full, cheap int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.full[svc]), l.cheap[svc]
}

func probedClient(t *testing.T, srv *embedtest.Server) (*clientv3.Client, *probeLog) {
	t.Helper()
	l := &probeLog{full: map[string][]time.Time{}, cheap: map[string]int{}}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(l.intercept)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// On an external cluster, under the test's own prefix as srv.Client.
	return srv.Confine(c), l
}

// A Watcher's staleness probe reads the whole service (the newest mod
// revision and key count: etcd ranges over every key for it) only one time
// in ten while its cache is current; the other probes read one key, so a
// fleet of watchers of a large service does not keep the server busy
// sorting it (BenchmarkScaleDiscovery, quiet-big). A change is still
// caught up: the cache lists it.
func TestProbeReadsServiceOneTimeInTen(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t)
	c, log := probedClient(t, srv)
	r := newRegistry(t, srv.Client)
	register(t, ctx, r, "big", "a", "127.0.0.1:7001")
	w, err := discovery.NewWatcher(c, "big", discovery.WithProbeInterval(20*time.Millisecond), discovery.WithProbeTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	eventually(t, 30*time.Second, "60 probes", func() error {
		if full, cheap := log.counts("big"); full+cheap < 60 {
			return fmt.Errorf("%d probes", full+cheap)
		}
		return nil
	})
	full, cheap := log.counts("big")
	// One in ten, and one more for each time the cache was seen behind
	// (the probes after a failure or a change are full); none fail here.
	if limit := (full+cheap)/10 + 3; full > limit {
		t.Fatalf("%d of %d probes read the whole service, want at most %d", full, full+cheap, limit)
	}
	register(t, ctx, r, "big", "b", "127.0.0.1:7002")
	eventually(t, 10*time.Second, "b listed", current(w, "a", "b"))
}

// Watchers started together do not probe together: each one's first probe
// comes at a random point of its first interval.
func TestProbesOfWatchersStartedTogetherSpread(t *testing.T) {
	const watchers, interval = 20, time.Second
	srv := embedtest.Start(t)
	c, log := probedClient(t, srv)
	for i := range watchers {
		w, err := discovery.NewWatcher(c, fmt.Sprintf("s%02d", i), discovery.WithProbeInterval(interval))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close(context.Background())
	}
	var first []time.Time
	eventually(t, 30*time.Second, "every watcher's first probe", func() error {
		log.mu.Lock()
		defer log.mu.Unlock()
		first = first[:0]
		for i := range watchers {
			ts := log.full[fmt.Sprintf("s%02d", i)]
			if len(ts) == 0 {
				return fmt.Errorf("s%02d not probed yet", i)
			}
			first = append(first, ts[0])
		}
		return nil
	})
	lo, hi := first[0], first[0]
	for _, ts := range first {
		lo, hi = minTime(lo, ts), maxTime(hi, ts)
	}
	// 20 points drawn from one second span less than a quarter of it with
	// probability about 1e-10; watchers probing on their creation's
	// ticker span only the few milliseconds their creation took.
	if spread := hi.Sub(lo); spread < interval/4 {
		t.Fatalf("first probes of %d watchers started together span %v, want at least %v", watchers, spread, interval/4)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
