package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func smallDemo() demoConfig {
	cfg := defaultDemoConfig()
	cfg.hosts, cfg.workers, cfg.k, cfg.steps = 10, 4, 2, 3
	cfg.step = 15 * time.Millisecond
	cfg.timeout = 40 * time.Second
	return cfg
}

// The demo with its faults passes its own invariant checks, and the faults
// really happened: a worker crashed mid-host and its host was resumed from
// the checkpoint; the coordinator was killed and another took over.
func TestDemoWithFaults(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	rep, err := runFleet(context.Background(), smallDemo(), &out)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.ok() {
		t.Fatalf("invariants broken:\n%s", out.String())
	}
	if rep.crashed == "" || rep.killed == "" || rep.failover <= 0 || rep.resumed < 1 {
		t.Errorf("faults not exercised (crashed %q, killed %q, failover %v, resumed %d):\n%s",
			rep.crashed, rep.killed, rep.failover, rep.resumed, out.String())
	}
	if rep.maxFlight > 2 {
		t.Errorf("max in flight %d", rep.maxFlight)
	}
	for _, want := range []string{"crashed rolling out", "redelivered to", "killed, its leases revoked", "is the coordinator", "All invariants held."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// The demo command without faults, through the CLI.
func TestDemoCommandNoFaults(t *testing.T) {
	t.Parallel()
	r := cli(t, context.Background(), "demo", "--hosts", "6", "--workers", "3", "-k", "2", "--steps", "2",
		"--step-time", "10ms", "--no-faults", "--quiet")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.errOut)
	}
	if !strings.Contains(r.out, "6/6 hosts rolled out") || !strings.Contains(r.out, "All invariants held.") {
		t.Errorf("summary missing:\n%s", r.out)
	}
	if strings.Contains(r.out, "crashed") || strings.Contains(r.out, "survived the faults") {
		t.Errorf("faults with --no-faults:\n%s", r.out)
	}
}

func TestDemoBadFlags(t *testing.T) {
	for _, args := range [][]string{{"demo", "-k", "0"}, {"demo", "--hosts", "x"}, {"demo", "extra"}} {
		if r := cli(t, context.Background(), args...); r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %s", args, r.code, exitUsage, r.errOut)
		}
	}
}

// The checker is not a rubber stamp: a ledger that saw a checkpoint go
// backwards, or more than K hosts in flight, fails the verdict.
func TestLedgerCatchesViolations(t *testing.T) {
	l := newLedger()
	l.save("host-01", 1)
	l.save("host-01", 2)
	l.begin("host-01", 1) // resumed behind the saved step: lost work
	l.save("host-01", 2)  // saved the same step again: backwards
	if len(l.violations) != 2 {
		t.Fatalf("violations %q", l.violations)
	}
}

// The hooks discovery and pubsub will use see every worker start and report
// its status.
func TestDemoHooks(t *testing.T) {
	t.Parallel()
	cfg := smallDemo()
	cfg.hosts, cfg.workers, cfg.faults, cfg.quiet = 4, 3, false, true
	var mu sync.Mutex
	started, stopped := map[string]bool{}, 0
	states := map[string]bool{}
	cfg.hooks = fleetHooks{
		WorkerStarted: func(ctx context.Context, c *clientv3.Client, worker string) (func(), error) {
			mu.Lock()
			defer mu.Unlock()
			started[worker] = true
			return func() { mu.Lock(); stopped++; mu.Unlock() }, nil
		},
		WorkerStatus: func(ctx context.Context, c *clientv3.Client, st workerStatus) {
			mu.Lock()
			defer mu.Unlock()
			states[st.State] = true
		},
	}
	var out bytes.Buffer
	rep, err := runFleet(context.Background(), cfg, &out)
	if err != nil || !rep.ok() {
		t.Fatalf("%v\n%s", err, out.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(started) != 3 || stopped != 3 || !states["rolling out"] || !states["coordinating"] || !states["idle"] {
		t.Errorf("started %v, stopped %d, states %v", started, stopped, states)
	}
}
