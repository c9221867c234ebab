package election_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
)

func meteredSession(t *testing.T, c *clientv3.Client, r *telemetrytest.Reader, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	opts = append([]concurrency.SessionOption{concurrency.WithTTL(5 * time.Second), concurrency.WithMeterProvider(r.Provider)}, opts...)
	s, err := concurrency.NewSession(testCtx(t), c, opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// until polls r's metric name (at the data points with attrs) until it
// equals want, for up to 20s.
func until(t *testing.T, r *telemetrytest.Reader, want float64, name string, attrs ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := r.Get(name, attrs...)
		if got.Found && got.Value == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %+v, want %v", name, attrs, got, want)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// Two processes (each its own meter provider) campaign in one election
// with the name attribute: the "is leader" gauge is 1 for the leader and 0
// for the waiting candidate, and swaps on a resignation; each won campaign
// counts a leader change (source=campaign); the first leader's Observe
// stream counts the second leader (source=observe) but not the state it
// started with.
func TestMetricsElectionLeader(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	ra, rb := telemetrytest.New(t), telemetrytest.New(t)
	a := newElection(t, meteredSession(t, srv.Client, ra, concurrency.WithNameAttribute()), "vote")
	b := newElection(t, meteredSession(t, srv.Client, rb, concurrency.WithNameAttribute()), "vote")

	la, err := a.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	until(t, ra, 1, "concord.election.leader", "concord.name", "vote")
	until(t, ra, 1, "concord.election.leader_changes", "source", "campaign", "concord.name", "vote")
	obs, err := a.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := get(t, obs.C(), 10*time.Second, "first state"); l.Token != la.Token() {
		t.Fatalf("first observed leader %+v, want a's term %d", l, la.Token())
	}
	bGot := campaignAsync(ctx, b, "b")
	until(t, rb, 0, "concord.election.leader", "concord.name", "vote")
	if got := ra.Get("concord.election.leader_changes", "source", "observe"); got.Value != 0 {
		t.Fatalf("observe counted %v changes before any, want 0", got.Value)
	}

	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	res := get(t, bGot, 10*time.Second, "b's campaign")
	if res.err != nil {
		t.Fatal(res.err)
	}
	defer func() { _ = res.l.Resign(context.Background()) }()
	until(t, ra, 0, "concord.election.leader", "concord.name", "vote")
	until(t, rb, 1, "concord.election.leader", "concord.name", "vote")
	until(t, rb, 1, "concord.election.leader_changes", "source", "campaign")
	for l := range obs.C() {
		if l.Token == res.l.Token() {
			break
		}
	}
	until(t, ra, 1, "concord.election.leader_changes", "source", "observe", "concord.name", "vote")
	until(t, ra, 1, "concord.election.terms_won", "concord.name", "vote")
}

// Without the name attribute "is leader" is not reported per election: how
// many elections a process leads is concord.holders{recipe=election}.
func TestMetricsElectionUnnamed(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	r := telemetrytest.New(t)
	s := meteredSession(t, srv.Client, r)
	l1, err := newElection(t, s, "one").Campaign(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l1.Resign(context.Background()) }()
	l2, err := newElection(t, s, "two").Campaign(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l2.Resign(context.Background()) }()
	until(t, r, 2, "concord.holders", "recipe", "election")
	until(t, r, 2, "concord.election.leader_changes", "source", "campaign")
	if got := r.Get("concord.election.leader"); got.Found {
		t.Fatalf("concord.election.leader reported without the name attribute: %+v", got)
	}
}
