package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestCampaignResignHandsOver(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newElection(t, newSession(t, srv.Client, 5*time.Second), "sched")
	b := newElection(t, newSession(t, srv.Client, 5*time.Second), "sched")
	if _, err := a.Leader(ctx); !errors.Is(err, election.ErrNoLeader) {
		t.Fatalf("Leader before any campaign = %v, want ErrNoLeader", err)
	}
	la, err := a.Campaign(ctx, "10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Campaign(ctx, "x"); !errors.Is(err, election.ErrAlreadyCampaigning) {
		t.Fatalf("second campaign on one value = %v", err)
	}
	bGot := campaignAsync(ctx, b, "10.0.0.2:80")
	pending(t, bGot, "b campaigns while a leads")
	if err := la.Proclaim(ctx, "10.0.0.1:81"); err != nil {
		t.Fatal(err)
	}
	cur, err := b.Leader(ctx)
	if err != nil || cur.Value != "10.0.0.1:81" || cur.Token != la.Token() {
		t.Fatalf("Leader = %+v %v", cur, err)
	}
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	r := get(t, bGot, 5*time.Second, "b after a resigned")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.l.Token() <= la.Token() {
		t.Fatalf("term token did not increase: %d then %d", la.Token(), r.l.Token())
	}
	if err := la.Proclaim(ctx, "stale"); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Proclaim after resign = %v, want ErrNotLeader", err)
	}
	// A deposed leader's guarded writes fail.
	if _, err := la.Guard().Do(ctx, clientv3.OpPut("sched/state", "a")); err == nil {
		t.Fatal("deposed leader's guarded write landed")
	}
	if _, err := r.l.Guard().Do(ctx, clientv3.OpPut("sched/state", "b")); err != nil {
		t.Fatalf("leader's guarded write: %v", err)
	}
	_ = r.l.Resign(ctx)
}

func TestFailedCampaignLeavesNoKey(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	a := newElection(t, newSession(t, srv.Client, 5*time.Second), "sched")
	b := newElection(t, newSession(t, srv.Client, 5*time.Second), "sched")
	la, err := a.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if _, err := b.Campaign(cctx, "b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Campaign = %v", err)
	}
	resp, err := srv.Client.Get(ctx, "sched/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 1 {
		t.Fatalf("keys after a failed campaign: %d (%v), want 1", resp.Count, err)
	}
	_ = la.Resign(ctx)
}

func TestResumeCandidacy(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	s1 := newSession(t, srv.Client, 5*time.Second)
	la, err := newElection(t, s1, "sched").Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	lease := s1.Lease()
	s1.Orphan() // the process stops without revoking
	s2 := newSession(t, srv.Client, 5*time.Second)
	_ = s2
	resumed, err := concurrencyResume(t, srv.Client, lease)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := newElection(t, resumed, "sched").Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Token() != la.Token() {
		t.Fatalf("resumed term token %d, want %d", l2.Token(), la.Token())
	}
	if _, err := newElection(t, s2, "sched").Resume(ctx); !errors.Is(err, election.ErrNoCandidacy) {
		t.Fatalf("Resume without candidacy = %v", err)
	}
	_ = l2.Resign(ctx)
}

// Observe reports every leader, proclaimed values and "no leader", in order.
func TestObserveSeesEveryState(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx, cancel := context.WithCancel(testCtx(t))
	o, err := election.Observe(ctx, srv.Client, "sched")
	if err != nil {
		t.Fatal(err)
	}
	next := func(what string) election.Leader { return get(t, o.C(), 5*time.Second, what) }
	if l := next("initial"); !l.None() {
		t.Fatalf("initial state %+v, want none", l)
	}
	a := newElection(t, newSession(t, srv.Client, 5*time.Second), "sched")
	b := newElection(t, newSession(t, srv.Client, 5*time.Second), "sched")
	la, err := a.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if l := next("a elected"); l.Value != "a" || l.Token != la.Token() {
		t.Fatalf("got %+v, want a", l)
	}
	bGot := campaignAsync(ctx, b, "b")
	// b in line before a resigns, or "no leader" comes between them.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := srv.Client.Get(ctx, "sched/.election/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b not in line within 5s (%d candidates)", resp.Count)
		}
	}
	if err := la.Proclaim(ctx, "a2"); err != nil {
		t.Fatal(err)
	}
	if l := next("a proclaims"); l.Value != "a2" {
		t.Fatalf("got %+v, want a2", l)
	}
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if l := next("b elected"); l.Value != "b" {
		t.Fatalf("got %+v, want b", l)
	}
	lb := get(t, bGot, 5*time.Second, "b campaign").l
	if _, err := srv.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if l := next("no leader"); !l.None() {
		t.Fatalf("got %+v, want none", l)
	}
	cancel()
	for range o.C() {
	}
	if !errors.Is(o.Err(), context.Canceled) {
		t.Fatalf("Err = %v", o.Err())
	}
}
