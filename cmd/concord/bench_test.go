package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/internal/bench"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// benchServer starts an embedded etcd for bench and returns its
// --endpoints flag. fsync is off: the figures are not judged here, and a
// loaded CI disk made requests time out.
func benchServer(t *testing.T) (*embedtest.Server, string) {
	t.Helper()
	embedtest.RequireEmbedded(t, "the CLI's own connections and the server's /metrics")
	srv := embedtest.Start(t, embedtest.NoFsync())
	return srv, "--endpoints=" + strings.Join(srv.Endpoints, ",")
}

// liveLeases are the server's leases.
func liveLeases(t *testing.T, c *clientv3.Client) []clientv3.LeaseID {
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

// assertNothingLeft fails t if a key is left under prefix or a lease other
// than those in before is alive.
func assertNothingLeft(t *testing.T, c *clientv3.Client, prefix string, before []clientv3.LeaseID) {
	t.Helper()
	resp, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		t.Errorf("left behind: %s", kv.Key)
	}
	if after := liveLeases(t, c); !slices.Equal(after, before) {
		t.Errorf("leases alive after bench: %x; before it: %x", after, before)
	}
}

// bench all --json: every workload in a decodable report of the documented
// schema; every event of the run is under its prefix, a key outside it is
// unchanged, and nothing of the run is left.
func TestBenchAllJSON(t *testing.T) {
	srv, ep := benchServer(t)
	ctx := context.Background()
	put, err := srv.Client.Put(ctx, "sentinel", "untouched")
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wch := srv.Client.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(put.Header.Revision+1))
	before := liveLeases(t, srv.Client)
	r := cli(t, ctx, "bench", "all", ep, "--json", "--duration", "1s", "--contenders", "3", "--instances", "100", "--prefix", "run-1/")
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.errOut)
	}
	if !strings.Contains(r.errOut, "bench: lock handoff") || !strings.Contains(r.errOut, "bench: discovery fan out") {
		t.Errorf("no progress on stderr:\n%s", r.errOut)
	}
	// Every field of schema version 1: decoding rejects any other.
	type measurement struct {
		Op        string   `json:"op"`
		Count     int64    `json:"count"`
		DurationS float64  `json:"duration_s"`
		OpsPerSec float64  `json:"ops_per_sec"`
		P50Ms     float64  `json:"p50_ms"`
		P99Ms     float64  `json:"p99_ms"`
		ToFloor   float64  `json:"p50_to_floor"`
		CPU       *float64 `json:"server_cpu_ms_per_op"`
		Unary     *float64 `json:"unary_requests_per_op"`
		Events    *float64 `json:"watch_events_per_op"`
	}
	var rep struct {
		Version     int         `json:"version"`
		Endpoints   []string    `json:"endpoints"`
		Prefix      string      `json:"prefix"`
		Started     time.Time   `json:"started"`
		DurationS   float64     `json:"duration_s"`
		ServerStats bool        `json:"server_stats"`
		Floor       measurement `json:"floor"`
		Workloads   []struct {
			Name         string        `json:"name"`
			Contenders   int           `json:"contenders"`
			Limit        int           `json:"limit"`
			Instances    int           `json:"instances"`
			Watchers     int           `json:"watchers"`
			Verdict      string        `json:"verdict"`
			Measurements []measurement `json:"measurements"`
		} `json:"workloads"`
	}
	dec := json.NewDecoder(strings.NewReader(r.out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("%v in:\n%s", err, r.out)
	}
	if rep.Version != 1 || rep.Prefix != "run-1/" || !rep.ServerStats || rep.DurationS != 1 || len(rep.Endpoints) != 1 ||
		time.Since(rep.Started) > time.Minute || rep.Floor.Op != "put_event" || rep.Floor.Count == 0 || rep.Floor.P50Ms <= 0 || rep.Floor.ToFloor != 1 {
		t.Errorf("report: %+v", rep)
	}
	var names []string
	for _, w := range rep.Workloads {
		names = append(names, w.Name)
		if w.Contenders != 3 || w.Verdict == "" || len(w.Measurements) == 0 ||
			(w.Name == "sem") != (w.Limit == 1) || (w.Name == "discovery") != (w.Watchers == 3 && w.Instances > 0) {
			t.Errorf("%s: %+v", w.Name, w)
		}
		for _, m := range w.Measurements {
			if m.Count == 0 || m.OpsPerSec <= 0 || m.P50Ms <= 0 || m.P99Ms < m.P50Ms || m.ToFloor <= 0 ||
				m.CPU == nil || m.Unary == nil || m.Events == nil {
				t.Errorf("%s %s: %+v", w.Name, m.Op, m)
			}
		}
	}
	if !slices.Equal(names, bench.Workloads) {
		t.Errorf("workloads %v, want %v", names, bench.Workloads)
	}
	assertNothingLeft(t, srv.Client, "run-1/", before)
	got, err := srv.Client.Get(ctx, "sentinel")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "untouched" || got.Kvs[0].ModRevision != put.Header.Revision {
		t.Errorf("sentinel outside the prefix changed: %v", got.Kvs)
	}
	for seen := put.Header.Revision; seen < got.Header.Revision; {
		wr := <-wch
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			seen = ev.Kv.ModRevision
			if !strings.HasPrefix(string(ev.Kv.Key), "run-1/") {
				t.Errorf("event outside the prefix: %s %q", ev.Type, ev.Kv.Key)
			}
		}
	}
}

// bench refuses a prefix that holds keys (exit 2) and leaves them; with
// --force it runs, prints its table and verdict, and deletes them. Without
// endpoints it exits 3, as every command does.
func TestBenchRefusesUsedPrefix(t *testing.T) {
	srv, ep := benchServer(t)
	ctx := context.Background()
	if _, err := srv.Client.Put(ctx, "mine/config", "v"); err != nil {
		t.Fatal(err)
	}
	r := cli(t, ctx, "bench", "sem", ep, "--prefix", "mine", "--duration", "300ms")
	if r.code != exitUsage || !strings.Contains(r.errOut, "mine/ has 1 keys") || !strings.Contains(r.errOut, "--force") {
		t.Errorf("used prefix: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if got, err := srv.Client.Get(ctx, "mine/config"); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("refused run touched the prefix: %v", err)
	}
	before := liveLeases(t, srv.Client)
	r = cli(t, ctx, "bench", "sem", ep, "--prefix", "mine", "--duration", "300ms", "--force")
	if r.code != 0 {
		t.Fatalf("--force: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	for _, want := range []string{"WORKLOAD", "floor", "put event", "sem", "grant", "fine for permits held longer than"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("no %q in:\n%s", want, r.out)
		}
	}
	assertNothingLeft(t, srv.Client, "mine/", before)

	t.Setenv("ETCD_ENDPOINTS", "")
	if r := cli(t, ctx, "bench", "lock"); r.code != exitUnreachable || !strings.Contains(r.errOut, "--endpoints") {
		t.Errorf("no endpoints: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	for _, args := range [][]string{{"bench"}, {"bench", "mutex"}, {"bench", "lock", "--contenders", "0"},
		{"bench", "lock", "--duration", "0s"}, {"bench", "lock", ep, "--prefix", "/"}} {
		if r := cli(t, ctx, args...); r.code != exitUsage {
			t.Errorf("%q: exit %d, want %d; stderr:\n%s", args, r.code, exitUsage, r.errOut)
		}
	}
}

// Ctrl-C (SIGINT) stops bench within a bound, exit 130, with no key of the
// run and no lease it granted left.
func TestBenchInterrupt(t *testing.T) {
	srv, ep := benchServer(t)
	before := liveLeases(t, srv.Client)
	cmd, out := cliProcess(t, "bench", "lock", ep, "--duration", "1m", "--contenders", "4", "--prefix", "interrupted/")
	out.waitFor(t, "bench: lock handoff 1s/1m0s")
	// The run is under way: its sessions hold leases and keys.
	if live := liveLeases(t, srv.Client); len(live) <= len(before) {
		t.Fatalf("no lease of the run alive: %x", live)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-time.After(20 * time.Second):
		t.Fatalf("bench did not stop within 20 s of SIGINT; output:\n%s", out.String())
	}
	t.Logf("stopped %v after SIGINT", time.Since(start))
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Errorf("SIGINT: %v, want exit %d; output:\n%s", err, exitInterrupted, out.String())
	}
	if !strings.Contains(out.String(), "interrupted; the run's keys and leases were removed") {
		t.Errorf("output:\n%s", out.String())
	}
	assertNothingLeft(t, srv.Client, "interrupted/", before)
}

func TestMetricsURLs(t *testing.T) {
	got := metricsURLs([]string{"http://a:1", "b:2", "unix:///tmp/s"}, false)
	if want := []string{"http://a:1", "http://b:2", "unix:///tmp/s"}; !slices.Equal(got, want) {
		t.Errorf("plain: %q, want %q", got, want)
	}
	if got := metricsURLs([]string{"b:2"}, true); !slices.Equal(got, []string{"https://b:2"}) {
		t.Errorf("TLS: %q", got)
	}
}
