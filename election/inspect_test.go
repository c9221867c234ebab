package election_test

import (
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
)

func TestInspectLeaderAndCandidatesInOrder(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	ctx := testCtx(t)
	if _, err := election.Inspect(ctx, srv.Client, ""); !errors.Is(err, election.ErrInvalidName) {
		t.Fatalf("Inspect of an empty name = %v, want ErrInvalidName", err)
	}
	st, err := election.Inspect(ctx, srv.Client, "sched")
	if err != nil || !st.Leader.None() || len(st.Candidates) != 0 || st.Revision == 0 {
		t.Fatalf("Inspect of an empty election = %+v, %v", st, err)
	}
	la, err := newElection(t, newSession(t, srv.Client, 5*time.Second), "sched").Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// b joins the line before c: each is seen waiting before the next starts.
	for i, v := range []string{"b", "c"} {
		campaignAsync(ctx, newElection(t, newSession(t, srv.Client, 5*time.Second), "sched"), v)
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err = election.Inspect(ctx, srv.Client, "sched")
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Candidates) == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("candidate %s not in line within 10s: %+v", v, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if st.Leader.Value != "a" || st.Leader.Token != la.Token() {
		t.Fatalf("leader = %+v, want a with token %d", st.Leader, la.Token())
	}
	if st.Candidates[0].Value != "b" || st.Candidates[1].Value != "c" ||
		st.Candidates[0].Token <= st.Leader.Token || st.Candidates[1].Token <= st.Candidates[0].Token ||
		st.Candidates[0].Lease == 0 {
		t.Fatalf("candidates = %+v, want b then c, tokens increasing, with leases", st.Candidates)
	}
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err = election.Inspect(ctx, srv.Client, "sched")
		if err == nil && st.Leader.Value == "b" && len(st.Candidates) == 1 && st.Candidates[0].Value == "c" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a resigned: %+v %v, want b leading and c waiting", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
