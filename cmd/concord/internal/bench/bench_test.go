package bench

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// benchServer is an embedded etcd and a Config for it.
func benchServer(t *testing.T) (*embedtest.Server, Config) {
	t.Helper()
	embedtest.RequireEmbedded(t, "a run's own connections and prefix")
	// fsync off: the figures are not judged here, and a loaded CI disk
	// made requests time out.
	srv := embedtest.Start(t, embedtest.NoFsync())
	return srv, Config{Client: clientv3.Config{Endpoints: srv.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()},
		MetricsEndpoints: srv.Endpoints, Contenders: 4, Instances: 200, Duration: time.Second, Workloads: Workloads}
}

// leases are the server's live leases.
func leases(t *testing.T, c *clientv3.Client) []clientv3.LeaseID {
	t.Helper()
	resp, err := c.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []clientv3.LeaseID
	for _, l := range resp.Leases {
		ids = append(ids, l.ID)
	}
	slices.Sort(ids)
	return ids
}

// assertClean fails t if keys remain under prefix or leases other than
// before are alive.
func assertClean(t *testing.T, c *clientv3.Client, prefix string, before []clientv3.LeaseID) {
	t.Helper()
	resp, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		t.Errorf("left behind: %s", kv.Key)
	}
	if after := leases(t, c); !slices.Equal(after, before) {
		t.Errorf("leases alive after the run: %x, before it: %x", after, before)
	}
}

// Every workload runs against a real etcd and measures something, each
// operation's server figures included; every event of the run is under
// its prefix; afterwards nothing of it is left.
func TestRunAll(t *testing.T) {
	srv, cfg := benchServer(t)
	ctx := context.Background()
	cfg.Prefix, cfg.Duration = "bench-test", 500*time.Millisecond // the CLI's tests run it for 1s
	start, err := srv.Client.Get(ctx, "sentinel")
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wch := srv.Client.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))
	before := leases(t, srv.Client)
	var progress []Progress
	cfg.Progress = func(p Progress) { progress = append(progress, p) }
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Prefix != "bench-test/" || !rep.ServerStats || rep.Floor.Count == 0 || rep.Floor.P50Ms <= 0 {
		t.Errorf("report: prefix %q, server stats %v, floor %+v", rep.Prefix, rep.ServerStats, rep.Floor)
	}
	wantOps := map[string][]string{"lock": {"handoff"}, "sem": {"grant"}, "queue": {"enqueue", "claim_ack"},
		"election": {"failover"}, "discovery": {"register", "snapshot_load", "fan_out"}}
	var got []string
	for _, w := range rep.Workloads {
		got = append(got, w.Name)
		var ops []string
		for _, m := range w.Measurements {
			ops = append(ops, m.Op)
			if m.Count == 0 || m.OpsPerSec <= 0 || m.P50Ms <= 0 || m.P99Ms < m.P50Ms || m.P50ToFloor <= 0 ||
				m.ServerCPUMsPerOp == nil || m.UnaryRequestsPerOp == nil || *m.UnaryRequestsPerOp <= 0 {
				t.Errorf("%s %s: %+v", w.Name, m.Op, m)
			}
		}
		if !slices.Equal(ops, wantOps[w.Name]) {
			t.Errorf("%s measured %v, want %v", w.Name, ops, wantOps[w.Name])
		}
		if w.Verdict == "" || strings.HasPrefix(w.Verdict, "no ") {
			t.Errorf("%s verdict %q", w.Name, w.Verdict)
		}
	}
	if !slices.Equal(got, Workloads) {
		t.Errorf("ran %v, want %v", got, Workloads)
	}
	// Registration is bounded by half the duration: on a loaded machine
	// it may register fewer than asked.
	if w := rep.Workloads[len(rep.Workloads)-1]; w.Instances < 1 || w.Instances > cfg.Instances || w.Watchers != cfg.Contenders {
		t.Errorf("discovery registered %d instances for %d watchers, want 1..%d for %d", w.Instances, w.Watchers, cfg.Instances, cfg.Contenders)
	}
	if rep.Workloads[1].Limit != 1 {
		t.Errorf("sem limit %d for 4 contenders, want 1", rep.Workloads[1].Limit)
	}
	// One as each phase begins: the floor, and lock, sem, queue (2),
	// election and discovery (3): 9.
	if len(progress) < 9 {
		t.Errorf("%d progress reports over 9 phases", len(progress))
	}
	assertClean(t, srv.Client, cfg.Prefix, before)
	// Every event since the run began is under its prefix, the last one
	// the clean-up's.
	end, err := srv.Client.Get(ctx, "sentinel")
	if err != nil {
		t.Fatal(err)
	}
	for seen := int64(0); seen < end.Header.Revision; {
		wr := <-wch
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			seen = ev.Kv.ModRevision
			if !strings.HasPrefix(string(ev.Kv.Key), "bench-test/") {
				t.Errorf("event outside the prefix: %s %q", ev.Type, ev.Kv.Key)
			}
		}
	}
}

// A prefix that holds keys is refused unless Force; a forced run deletes
// them too. Without /metrics the server figures are n/a.
func TestPrefixInUse(t *testing.T) {
	srv, cfg := benchServer(t)
	ctx := context.Background()
	cfg.Prefix, cfg.Workloads, cfg.Duration, cfg.MetricsEndpoints = "taken/", []string{"lock"}, 300*time.Millisecond, nil
	if _, err := srv.Client.Put(ctx, "taken/x", "mine"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Put(ctx, "takenx", "outside"); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, cfg); !errors.Is(err, ErrPrefixInUse) {
		t.Fatalf("run on a prefix with keys: %v, want ErrPrefixInUse", err)
	}
	if resp, err := srv.Client.Get(ctx, "taken/x"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("refused run changed the prefix: %v", err)
	}
	cfg.Force = true
	before := leases(t, srv.Client)
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	assertClean(t, srv.Client, "taken/", before)
	if resp, err := srv.Client.Get(ctx, "takenx"); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("a key beside the prefix went: %v", err)
	}
	m := rep.Workloads[0].Measurements[0]
	if rep.ServerStats || m.ServerCPUMsPerOp != nil || m.UnaryRequestsPerOp != nil || m.Count == 0 {
		t.Errorf("without metrics: server stats %v, %+v", rep.ServerStats, m)
	}
	var b strings.Builder
	if err := WriteText(&b, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "n/a") || !strings.Contains(b.String(), "fine for locks held longer than") {
		t.Errorf("text without metrics:\n%s", b.String())
	}
}

func TestInvalidConfig(t *testing.T) {
	good := Config{Contenders: 1, Instances: 1, Duration: time.Second, Workloads: []string{"lock"}}
	for _, bad := range []func(*Config){
		func(c *Config) { c.Contenders = 0 },
		func(c *Config) { c.Instances = 0 },
		func(c *Config) { c.Duration = 0 },
		func(c *Config) { c.Workloads = nil },
		func(c *Config) { c.Workloads = []string{"mutex"} },
		func(c *Config) { c.Prefix = "/" },
	} {
		c := good
		bad(&c)
		if _, err := Run(context.Background(), c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", c, err)
		}
	}
	c := good
	if err := c.validate(); err != nil || !strings.HasPrefix(c.Prefix, PrefixRoot) || !strings.HasSuffix(c.Prefix, "/") {
		t.Errorf("default prefix %q: %v", c.Prefix, err)
	}
}

func TestQuantile(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := quantile(slices.Clone(lat), 0.5), quantile(slices.Clone(lat), 0.99); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("p50 %v p99 %v of 1..100 ms", p50, p99)
	}
	if q := quantile(nil, 0.5); q != 0 {
		t.Errorf("quantile of nothing: %v", q)
	}
	var h handoff
	t0 := time.Now()
	if d := h.latency(t0, t0.Add(time.Millisecond)); d != time.Millisecond {
		t.Errorf("grant with no release before it: %v, want its own wait", d)
	}
	h.release(t0.Add(5 * time.Millisecond))
	if d := h.latency(t0, t0.Add(7*time.Millisecond)); d != 2*time.Millisecond {
		t.Errorf("grant after a release: %v, want the time since the release", d)
	}
}

// A request cut off by a phase's bound ends the phase, not the run: also
// when the server, whose copy of the deadline can fire first, answers
// "request timed out" just before the phase's context ends (a run under
// load once failed so). The same answer well before the bound is an error.
func TestEndedByBound(t *testing.T) {
	near, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	far, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	if !endedByBound(near, rpctypes.ErrTimeout) {
		t.Error("a server timeout 20 ms before the bound ended the run")
	}
	if endedByBound(far, rpctypes.ErrTimeout) {
		t.Error("a server timeout a minute before the bound was taken for the bound")
	}
	if endedByBound(near, errors.New("other")) {
		t.Error("another error near the bound was taken for the bound")
	}
	<-near.Done()
	if !endedByBound(near, errors.New("any")) {
		t.Error("an error after the bound ended the run")
	}
}
