package demo

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/pubsub"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func smallDemo() Config {
	cfg := DefaultConfig()
	cfg.Hosts, cfg.Workers, cfg.K, cfg.Steps = 10, 4, 2, 3
	cfg.Step = 15 * time.Millisecond
	cfg.Timeout = 40 * time.Second
	return cfg
}

// The demo with its faults passes its own invariant checks, and the faults
// really happened: a worker crashed mid-host and its host was resumed from
// the checkpoint; the coordinator was killed and another took over.
func TestDemoWithFaults(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	rep, err := Run(context.Background(), smallDemo(), &out)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("invariants broken:\n%s", out.String())
	}
	if rep.crashed == "" || rep.killed == "" || rep.failover <= 0 || rep.resumed < 1 {
		t.Errorf("faults not exercised (crashed %q, killed %q, failover %v, resumed %d):\n%s",
			rep.crashed, rep.killed, rep.failover, rep.resumed, out.String())
	}
	if rep.maxFlight > 2 {
		t.Errorf("max in flight %d", rep.maxFlight)
	}
	checkLinkInvariants(t, rep, out.String())
	checkMetrics(t, rep, smallDemo(), out.String())
	// Both dead workers' registrations went, each within its TTL and the
	// slack; the live ones stayed.
	cfg := smallDemo()
	for _, dead := range []string{rep.crashed, rep.killed} {
		if d, ok := rep.dropped[dead]; !ok || d <= 0 || d > cfg.ttl+convergeSlack {
			t.Errorf("%s's registration dropped after %v (gone: %v), want within %v", dead, d, ok, cfg.ttl+convergeSlack)
		}
		if slices.Contains(rep.listed, dead) {
			t.Errorf("dead %s still listed: %v", dead, rep.listed)
		}
	}
	if len(rep.listed) != cfg.Workers-2 {
		t.Errorf("discovery lists %v, want the %d live workers", rep.listed, cfg.Workers-2)
	}
	for _, want := range []string{"crashed rolling out", "redelivered to", "killed, its election and queue leases revoked", "is the coordinator",
		"discovery: all 4 workers registered", "registration expired", "workers registered: 2", "All invariants held."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// checkLinkInvariants checks the demo's discovery and status-topic verdicts
// and the figures behind them.
func checkLinkInvariants(t *testing.T, rep *Report, out string) {
	t.Helper()
	for _, name := range []string{"discovery converged", "status topic in order, no gap"} {
		found := false
		for _, c := range rep.checks {
			if c.name == name {
				found = true
				if !c.ok {
					t.Errorf("%s: broken: %s", name, c.detail)
				}
			}
		}
		if !found {
			t.Errorf("no %q check:\n%s", name, out)
		}
	}
	if !slices.Equal(rep.listed, rep.live) || len(rep.live) == 0 {
		t.Errorf("discovery lists %v, live workers %v", rep.listed, rep.live)
	}
	// Every acknowledged publish arrived, Seq 1..N with nothing skipped; a
	// publish cut short by a crash may have landed too.
	if rep.published == 0 || rep.received < rep.published || rep.lastSeq != int64(rep.received) || rep.gaps != 0 {
		t.Errorf("status topic: %d published, %d received, last seq %d, %d gaps or disorders",
			rep.published, rep.received, rep.lastSeq, rep.gaps)
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

// The status topic's checker catches a skipped Seq, a gap, a message
// delivered twice and one never delivered.
func TestFollowStatusCatchesViolations(t *testing.T) {
	msg := func(n int64) []byte { return []byte(fmt.Sprintf(`{"n":%d,"worker":"w","state":"step done"}`, n)) }
	s := followStatus{seen: map[int64]bool{}}
	s.on(pubsub.Event{Seq: 1, Data: msg(1)})
	s.on(pubsub.Event{Seq: 3, Data: msg(3)})               // seq 2 skipped
	s.on(pubsub.Event{Seq: 4, Data: msg(3)})               // publish 3 twice
	s.on(pubsub.Event{Seq: 6, Gap: &pubsub.Gap{Count: 2}}) // a gap
	if len(s.disorder) != 2 || len(s.gaps) != 1 || s.missing(map[int64]bool{1: true, 2: true, 3: true}) != 1 {
		t.Errorf("disorder %q, gaps %q", s.disorder, s.gaps)
	}
}

// Hooks added to the demo's own (discovery, pubsub) see every worker start
// and report its status.
func TestDemoHooks(t *testing.T) {
	t.Parallel()
	cfg := smallDemo()
	cfg.Hosts, cfg.Workers, cfg.Faults, cfg.Quiet = 4, 3, false, true
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
	rep, err := Run(context.Background(), cfg, &out)
	if err != nil || !rep.OK() {
		t.Fatalf("%v\n%s", err, out.String())
	}
	checkLinkInvariants(t, rep, out.String())
	mu.Lock()
	defer mu.Unlock()
	if len(started) != 3 || stopped != 3 || !states["rolling out"] || !states["coordinating"] || !states["idle"] ||
		!states["claimed"] || !states["step done"] || !states["host done"] {
		t.Errorf("started %v, stopped %d, states %v", started, stopped, states)
	}
}

// With one worker the text still reads right, and a coordinator's term is
// counted from 1 with its token beside it (the token is a revision).
func TestDemoOneWorker(t *testing.T) {
	t.Parallel()
	cfg := smallDemo()
	cfg.Hosts, cfg.Workers, cfg.K, cfg.Faults = 2, 1, 1, false
	var out bytes.Buffer
	rep, err := Run(context.Background(), cfg, &out)
	if err != nil || !rep.OK() {
		t.Fatalf("%v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"1 worker elect", "by 1 worker,", "1 term,", "is the coordinator (term 1, token ", "the one worker registered"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, bad := range []string{"1 workers", "1 terms"} {
		if strings.Contains(got, bad) {
			t.Errorf("output has %q:\n%s", bad, got)
		}
	}
}

// checkMetrics checks the demo's metrics table against what the demo did:
// every host acked once, the crash redelivered, the coordinator's death
// made a second term, every term an acquired Campaign.
func checkMetrics(t *testing.T, rep *Report, cfg Config, out string) {
	t.Helper()
	m := rep.Metrics
	if !strings.Contains(out, "What concord's metrics recorded") {
		t.Errorf("no metrics table:\n%s", out)
	}
	if m.Queue["acked"] != cfg.Hosts || m.Queue["enqueued"] < cfg.Hosts || m.Queue["delivered"] < cfg.Hosts+1 || m.Queue["redelivered"] < 1 {
		t.Errorf("queue metrics %v, want %d acked, at least %d enqueued, a redelivery", m.Queue, cfg.Hosts, cfg.Hosts)
	}
	if m.TermsWon < 2 || m.Acquired["election"] != m.TermsWon {
		t.Errorf("terms won %d, Campaigns acquired %d: want at least 2 (the coordinator was killed), equal", m.TermsWon, m.Acquired["election"])
	}
	if m.Acquired["semaphore"] < cfg.Hosts || m.Acquired["queue"] < cfg.Hosts {
		t.Errorf("acquired %v, want a permit and a claim per host at least", m.Acquired)
	}
	lost := 0
	for _, n := range m.HoldsLost {
		lost += n
	}
	if lost < 1 {
		t.Errorf("holds lost %v: the crash and the kill lost none", m.HoldsLost)
	}
}
