package pubsub_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// A Client whose clock is an hour ahead, publishing and trimming (with
// KeepFor every publisher trims), raises the floor to its messages; a
// publisher with a right clock lowers it (more than maxAhead above its
// clock) and stamps its messages with its own time, not an hour ahead.
func TestAheadTrimmerDoesNotMoveOthersAhead(t *testing.T) {
	for name, keep := range map[string]pubsub.Option{"KeepFor": pubsub.WithKeepFor(200 * time.Millisecond), "KeepLast": pubsub.WithKeepLast(5)} {
		t.Run(name, func(t *testing.T) {
			srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
			ahead := newPubSub(t, srv.Client, keep)
			pubsub.SetClock(ahead, func() time.Time { return time.Now().Add(time.Hour) })
			right := newPubSub(t, srv.Client, keep)
			publish(t, right, "news", "r0")
			for i := range 20 {
				time.Sleep(30 * time.Millisecond)
				publish(t, ahead, "news", fmt.Sprint("a", i))
				if _, err := ahead.Trim(testCtx(t), "news"); err != nil {
					t.Fatal(err)
				}
			}
			sub := subscribe(t, right, "news", pubsub.Now)
			for i := range 3 {
				rev := publish(t, right, "news", fmt.Sprint("r", i+1))[0]
				ev := next(t, sub)
				wantMsg(t, ev, rev, fmt.Sprint("r", i+1))
				if d := time.Until(ev.Time); d > time.Minute {
					t.Errorf("right clock's message %d stamped %v ahead", i+1, d.Round(time.Second))
				}
			}
		})
	}
}

// After the clock that was ahead is fixed, the floor its messages set stays
// ahead under KeepFor until they age out (a trim that deletes nothing
// writes nothing); a new Client with a right clock lowers it rather than
// stamp its messages an hour ahead.
func TestFloorAheadLoweredAfterClockFixed(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	keep := pubsub.WithKeepFor(200 * time.Millisecond)
	var skew atomic.Int64
	skew.Store(int64(time.Hour))
	ahead := newPubSub(t, srv.Client, keep)
	pubsub.SetClock(ahead, func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	for i := range 20 {
		time.Sleep(30 * time.Millisecond)
		publish(t, ahead, "news", fmt.Sprint("a", i))
	}
	skew.Store(0) // NTP fixed the clock
	right := newPubSub(t, srv.Client, keep)
	for i := range 20 {
		time.Sleep(30 * time.Millisecond)
		publish(t, ahead, "news", fmt.Sprint("fixed", i))
		publish(t, right, "news", fmt.Sprint("r", i))
		if _, err := right.Trim(testCtx(t), "news"); err != nil {
			t.Fatal(err)
		}
	}
	fresh := newPubSub(t, srv.Client, keep)
	sub := subscribe(t, fresh, "news", pubsub.Now)
	rev := publish(t, fresh, "news", "fresh")[0]
	ev := next(t, sub)
	wantMsg(t, ev, rev, "fresh")
	st, err := pubsub.Inspect(testCtx(t), srv.Client, "news")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(ev.Time); d > time.Minute {
		t.Errorf("a new Client with a right clock stamped its message %v ahead, %v after the fast clock was fixed (%d retained, %d trimmed)",
			d.Round(time.Second), 600*time.Millisecond, st.Retained, st.Trimmed)
	}
}

// A publisher whose clock is behind stamps ahead of it (its offset) so as
// not to hold the floor, and its own trims cap the floor at its clock with
// that offset: the floor does not trail now by its skew.
func TestBehindTrimmerKeepsTheFloorMoving(t *testing.T) {
	defer pubsub.SetFullReadEvery(1 << 30)()
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	behind := newPubSub(t, srv.Client, pubsub.WithKeepLast(10)) // trims too
	pubsub.SetClock(behind, func() time.Time { return time.Now().Add(-10 * time.Second) })
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(i))
	}
	var worst time.Duration
	for i := range 40 {
		publish(t, ps, "news", fmt.Sprint(30+i))
		publish(t, behind, "news", fmt.Sprint("behind", i))
		v := readFloor(t, srv.Client, "news")
		v.checkFloor(t)
		worst = max(worst, time.Since(time.Unix(0, stampOf(t, v.floor))))
	}
	if worst > 5*time.Second {
		t.Errorf("the floor trailed now by up to %v (the behind Client's trims capped it at its clock)", worst.Round(time.Millisecond))
	}
}

// A floor marker left without a trim record (deleted by hand) far above a
// publisher's clock is lowered all the same: the Publish does not loop.
func TestFloorWithoutRecordLowered(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	ahead := fmt.Sprintf("%016x%08x", uint64(time.Now().Add(time.Hour).UnixNano()), 0)
	if _, err := srv.Client.Put(ctx, "news/.f/"+ahead, ""); err != nil {
		t.Fatal(err)
	}
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	sub := subscribe(t, ps, "news", pubsub.Now)
	rev := publish(t, ps, "news", "now")[0]
	ev := next(t, sub)
	wantMsg(t, ev, rev, "now")
	if d := time.Until(ev.Time); d > time.Minute {
		t.Fatalf("message stamped %v ahead", d)
	}
	readFloor(t, srv.Client, "news").checkFloor(t)
}
