package pubsub_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// A subscriber whose connection is cut while messages are published and
// the history is compacted resumes by itself after the last message it
// delivered: with retention keeping them, every message arrives once, in
// order, with no gap.
func TestSubscribeResumesWithoutLoss(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	pub := newPubSub(t, srv.Client)
	ps := newPubSub(t, cut, pubsub.WithStallTimeout(300*time.Millisecond))
	sub := subscribe(t, ps, "news", pubsub.Oldest)
	revs := publish(t, pub, "news", "m0")
	wantMsg(t, next(t, sub), revs[0], "m0")

	// Pause, not Blackhole: see stress_test.go.
	p.Pause()
	var msgs []string
	for i := 1; i <= 20; i++ {
		msgs = append(msgs, fmt.Sprintf("m%d", i))
	}
	revs = publish(t, pub, "news", msgs...)
	if _, err := srv.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitPast(t, 700*time.Millisecond) // past the stall timeout
	p.Unpause()
	start := time.Now()
	for i, m := range msgs {
		wantMsg(t, next(t, sub), revs[i], m)
	}
	t.Logf("caught up %v after the fault healed", time.Since(start).Round(time.Millisecond))
	nothing(t, sub, 100*time.Millisecond)
}

// An application that restarts resumes with the last event it handled:
// Resume carries its sequence number, so the gap is counted exactly even
// though the history of that time was compacted.
func TestResumeCountsGapAfterCompaction(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(2))
	revs := publish(t, ps, "news", "a", "b")
	sub := subscribe(t, ps, "news", pubsub.Oldest)
	next(t, sub)
	last := next(t, sub)
	if last.Revision != revs[1] || last.Seq != 2 {
		t.Fatalf("event %+v, want b numbered 2", last)
	}
	revs = publish(t, ps, "news", "c", "d", "e", "f", "g")
	if _, err := srv.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for _, pos := range []pubsub.Position{pubsub.Resume(last), pubsub.After(last.Revision)} {
		re := subscribe(t, ps, "news", pos)
		ev := next(t, re)
		if ev.Gap == nil || ev.Gap.From != last.Revision+1 || ev.Gap.To != revs[2] || ev.Seq != 5 {
			t.Fatalf("first event %+v gap %v, want a gap to %d numbered 5", ev, ev.Gap, revs[2])
		}
		want := int64(3)
		if pos != pubsub.Resume(last) {
			want = -1 // After alone cannot count what was compacted
		}
		if ev.Gap.Count != want {
			t.Fatalf("gap count %d, want %d", ev.Gap.Count, want)
		}
		ev = next(t, re)
		wantMsg(t, ev, revs[3], "f")
		if ev.Seq != 6 {
			t.Fatalf("f numbered %d, want 6", ev.Seq)
		}
	}
}
