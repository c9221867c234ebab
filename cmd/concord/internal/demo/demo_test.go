package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/internal/watch"
	"github.com/concordkit/concord/pubsub"
	"github.com/concordkit/concord/rollout"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func smallDemo() Config {
	cfg := DefaultConfig()
	cfg.Hosts, cfg.Workers, cfg.K, cfg.Steps, cfg.Canaries, cfg.WaveSize = 10, 4, 2, 3, 1, 4
	cfg.Step = 15 * time.Millisecond
	cfg.Timeout = 40 * time.Second
	return cfg
}

// The demo with its faults passes its own invariant checks, and the faults
// really happened: a worker crashed mid-host and its host was resumed from
// the checkpoint; the coordinator was killed and another took over; every
// wave was opened, once.
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
	if rep.maxFlight > 2 || rep.maxFlight < 1 {
		t.Errorf("max in flight %d", rep.maxFlight)
	}
	if rep.waves != 4 || rep.opened != rep.waves-1 {
		t.Errorf("%d waves in the plan (want 4: the canary and waves of 4), %d opened after the first", rep.waves, rep.opened)
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
	for _, want := range []string{"crashed rolling out", "taken over by", "killed, its election and worker leases revoked", "is the coordinator",
		"created rollout \"demo\": 10 hosts in 4 waves (canary host-01, then waves of 4)", "wave 2/4 opened by coordinator worker-", "wave 4/4 opened",
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

// The checker is not a rubber stamp: more than K claims at a revision, a
// checkpoint going backwards or skipping, a wave opened out of order or
// early, a checkpointed step applied again, a stale or repeated step
// write, a host done twice, and a failed host each leave a violation.
func TestMonitorCatchesViolations(t *testing.T) {
	cfg := smallDemo()
	m := newMonitor(cfg, nil, io.Discard, newFleetLink(cfg.ttl, nil))
	m.view.quiet = true
	target := func(id string, wave int, state string, last int) rollout.TargetStatus {
		return rollout.TargetStatus{ID: id, Wave: wave, State: state, LastStep: last}
	}
	status := func(wave, inFlight int, waves []rollout.WaveStatus, ts ...rollout.TargetStatus) rollout.Status {
		return rollout.Status{State: rollout.Running, Wave: wave, InFlight: inFlight, Waves: waves, Targets: ts}
	}
	m.onRollout(rollout.Event{Kind: "snapshot", Status: status(0, 0, nil,
		target("host-01", 0, rollout.TargetWaiting, -1), target("host-02", 1, rollout.TargetWaiting, -1))})
	want := map[string]bool{}
	expect := func(kind string) {
		t.Helper()
		want[kind] = true
		for _, v := range m.violations {
			if strings.Contains(v, kind) {
				return
			}
		}
		t.Errorf("no %q violation in %q", kind, m.violations)
	}
	ev := func(st rollout.Status, id string) { m.onRollout(rollout.Event{Kind: "target", Target: id, Status: st}) }

	ev(status(0, 1, nil, target("host-01", 0, rollout.TargetInFlight, 1)), "host-01") // a step skipped: 0 -> 2
	expect("checkpoint of host-01 went from step 0 to 2")
	ev(status(0, 1, nil, target("host-01", 0, rollout.TargetInFlight, 0)), "host-01")
	expect("checkpoint of host-01 went from step 2 back to 1")
	ev(status(0, cfg.K+1, nil, target("host-01", 0, rollout.TargetInFlight, 0)), "host-01")
	expect("claimed at revision")
	ev(status(0, 1, nil, target("host-02", 1, rollout.TargetInFlight, -1)), "host-02")
	expect("host-02 (wave 2) in flight while wave 1 was open")
	m.onRollout(rollout.Event{Kind: "wave", Status: status(1, 1, []rollout.WaveStatus{{Wave: 0, InFlight: 1}, {Wave: 1}})})
	expect("wave 2 opened with 1 of wave 1's 1 hosts not done")
	m.onRollout(rollout.Event{Kind: "wave", Status: status(3, 0, make([]rollout.WaveStatus, 4))})
	expect("wave 4 opened after wave 2")

	ev(status(1, 0, nil, target("host-01", 0, rollout.TargetDone, 2)), "host-01")
	ev(status(1, 0, nil, target("host-01", 0, rollout.TargetWaiting, -1)), "host-01")
	expect("host-01 was done, then waiting")
	ev(status(1, 0, nil, target("host-01", 0, rollout.TargetDone, 2)), "host-01")
	if m.done["host-01"] != 2 {
		t.Errorf("host-01 done %d times, want 2 counted", m.done["host-01"])
	}
	failed := target("host-02", 1, rollout.TargetFailed, -1)
	failed.Error = "boom"
	ev(status(1, 0, nil, failed), "host-02")
	expect("host-02 failed: boom")

	// A host claimed, given back (its worker's lease expired) and claimed
	// again counts as one resume, after its checkpoint.
	for _, ts := range []rollout.TargetStatus{target("host-05", 0, rollout.TargetInFlight, -1),
		target("host-05", 0, rollout.TargetInFlight, 0), target("host-05", 0, rollout.TargetInFlight, 1),
		target("host-05", 0, rollout.TargetWaiting, 1), target("host-05", 0, rollout.TargetInFlight, 1)} {
		ev(status(1, 1, nil, ts), "host-05")
	}
	if !slices.Equal(m.resumes, []string{"host-05 after step 2/3"}) {
		t.Errorf("resumes %q, want host-05 after step 2/3", m.resumes)
	}

	rec := func(host string, step int, token int64, rev ...int64) *clientv3.Event {
		b, _ := json.Marshal(hostRec{Step: step, Token: token})
		kv := &mvccpb.KeyValue{Key: []byte(hostKey(host)), Value: b}
		if len(rev) > 0 {
			kv.ModRevision = rev[0]
		}
		return &clientv3.Event{Type: clientv3.EventTypePut, Kv: kv}
	}
	m.onRecords(watch.Update{Events: []*clientv3.Event{rec("host-03", 1, 10), rec("host-03", 2, 10), rec("host-03", 2, 12)}})
	if len(m.reruns) != 1 {
		t.Errorf("reruns %q, want the step applied again under a newer token", m.reruns)
	}
	m.onRecords(watch.Update{Events: []*clientv3.Event{rec("host-03", 2, 12)}})
	expect("step record of host-03: step 2 applied twice under token 12")
	m.onRecords(watch.Update{Events: []*clientv3.Event{rec("host-03", 3, 11)}})
	expect("stale write: host-03's step 3 landed under token 11 after token 12")
	m.onRecords(watch.Update{Events: []*clientv3.Event{rec("host-04", 2, 20)}})
	expect("step record of host-04: step 2 after step 0, a step skipped")
	m.onRecords(watch.Update{Events: []*clientv3.Event{rec("host-04", 1, 21)}})
	expect("step record of host-04: step 1 after step 2, backwards")

	// A step applied (its record written) after it was checkpointed is
	// lost work, judged by revision across the two streams; applied again
	// before it was checkpointed (the worker died first) is not.
	saved := status(1, 1, nil, target("host-06", 1, rollout.TargetInFlight, 0))
	saved.Revision = 100
	ev(saved, "host-06")
	m.onRecords(watch.Update{Events: []*clientv3.Event{rec("host-06", 1, 30, 90), rec("host-06", 1, 31, 95), rec("host-06", 1, 32, 110)}})
	m.violations = append(m.violations, m.lostWork()...)
	expect("lost work: host-06's step 1 applied again at revision 110 under token 32, after its checkpoint at revision 100")
	if n := len(m.lostWork()); n != 1 {
		t.Errorf("%d lost steps, want 1 (the write at revision 110)", n)
	}

	for _, v := range m.violations {
		found := false
		for kind := range want {
			found = found || strings.Contains(v, kind)
		}
		if !found {
			t.Errorf("unexpected violation %q", v)
		}
	}
	// Each violation lands in one named check, or in "no unexpected errors".
	if other := otherViolations(m.violations); len(other) != 2 {
		t.Errorf("unclassified violations %q, want the done-then-waiting and the failure", other)
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
// a slot and a claim per host and for the host taken over, the
// coordinator's death made a second term, every term an acquired Campaign,
// and the faults lost holds.
func checkMetrics(t *testing.T, rep *Report, cfg Config, out string) {
	t.Helper()
	m := rep.Metrics
	if !strings.Contains(out, "What concord's metrics recorded") {
		t.Errorf("no metrics table:\n%s", out)
	}
	if m.TermsWon < 2 || m.Acquired["election"] != m.TermsWon {
		t.Errorf("terms won %d, Campaigns acquired %d: want at least 2 (the coordinator was killed), equal", m.TermsWon, m.Acquired["election"])
	}
	// A slot and a claim per host at least; a host taken over after the
	// crash and after the kill needs one more of each.
	if m.Acquired["semaphore"] < cfg.Hosts+1 || m.Acquired["lock"] < cfg.Hosts+1 {
		t.Errorf("acquired %v, want a slot and a claim per host at least, and one more for the host taken over", m.Acquired)
	}
	lost := 0
	for _, n := range m.HoldsLost {
		lost += n
	}
	if lost < 1 {
		t.Errorf("holds lost %v: the crash and the kill lost none", m.HoldsLost)
	}
}
