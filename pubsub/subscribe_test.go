package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/pubsub"
)

func TestSubscribeOldest(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	revs := publish(t, ps, "news", "a", "b", "c")
	publish(t, ps, "news/sub", "other topic") // a nested topic is separate
	sub := subscribe(t, ps, "news", pubsub.Oldest)
	for i, m := range []string{"a", "b", "c"} {
		wantMsg(t, next(t, sub), revs[i], m)
	}
	rev := publish(t, ps, "news", "d")[0]
	wantMsg(t, next(t, sub), rev, "d")
}

func TestSubscribeNow(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	publish(t, ps, "news", "old")
	sub := subscribe(t, ps, "news", pubsub.Now)
	nothing(t, sub, 200*time.Millisecond)
	rev := publish(t, ps, "news", "new")[0]
	wantMsg(t, next(t, sub), rev, "new")
	// A message published right after Subscribe returns is delivered, for
	// either retention mode (Now is settled before Subscribe returns).
	logPS, err := pubsub.New(srv.Client, pubsub.WithKeepUntilCompaction())
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range []*pubsub.Client{ps, logPS} {
		topic := fmt.Sprintf("now-%d", i)
		for j := range 10 {
			sub := subscribe(t, p, topic, pubsub.Now)
			rev := publish(t, p, topic, fmt.Sprint(j))[0]
			wantMsg(t, next(t, sub), rev, fmt.Sprint(j))
		}
	}
}

func TestSubscribeFromRevision(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	revs := publish(t, ps, "news", "a", "b", "c", "d")
	sub := subscribe(t, ps, "news", pubsub.After(revs[1]))
	wantMsg(t, next(t, sub), revs[2], "c")
	wantMsg(t, next(t, sub), revs[3], "d")
	sub2 := subscribe(t, ps, "news", pubsub.From(revs[1]))
	wantMsg(t, next(t, sub2), revs[1], "b")
	wantMsg(t, next(t, sub2), revs[2], "c")
}

// KeepLast trims the oldest messages; a subscriber asking for them gets an
// exact gap, and one starting at Oldest gets no gap.
func TestRetentionKeepLast(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(3))
	var msgs []string
	for i := range 10 {
		msgs = append(msgs, fmt.Sprint(i))
	}
	revs := publish(t, ps, "news", msgs...)
	if _, err := ps.Trim(testCtx(t), "news"); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client.Get(testCtx(t), "news/.m/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 3 {
		t.Fatalf("%d messages kept, want 3", resp.Count)
	}
	sub := subscribe(t, ps, "news", pubsub.After(0))
	ev := next(t, sub)
	if ev.Gap == nil || ev.Gap.From != 1 || ev.Gap.To != revs[6] || ev.Gap.Count != 7 {
		t.Fatalf("first event %+v gap %v, want a gap to %d of 7", ev, ev.Gap, revs[6])
	}
	for i := 7; i < 10; i++ {
		wantMsg(t, next(t, sub), revs[i], msgs[i])
	}
	old := subscribe(t, ps, "news", pubsub.Oldest)
	wantMsg(t, next(t, old), revs[7], "7")
	// From a trimmed revision: counted from etcd's history.
	mid := subscribe(t, ps, "news", pubsub.After(revs[2]))
	ev = next(t, mid)
	if ev.Gap == nil || ev.Gap.From != revs[2]+1 || ev.Gap.To != revs[6] || ev.Gap.Count != 4 {
		t.Fatalf("first event %+v gap %v, want a gap (%d, %d] of 4", ev, ev.Gap, revs[2], revs[6])
	}
	wantMsg(t, next(t, mid), revs[7], "7")
	// After compaction the range is known, the count is not.
	if _, err := srv.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mid = subscribe(t, ps, "news", pubsub.After(revs[2]))
	ev = next(t, mid)
	if ev.Gap == nil || ev.Gap.From != revs[2]+1 || ev.Gap.To != revs[6] || ev.Gap.Count != -1 {
		t.Fatalf("first event %+v gap %v, want a gap (%d, %d] of unknown count", ev, ev.Gap, revs[2], revs[6])
	}
	wantMsg(t, next(t, mid), revs[7], "7")
	// A start after the trimmed range has nothing missing.
	late := subscribe(t, ps, "news", pubsub.After(revs[7]))
	wantMsg(t, next(t, late), revs[8], "8")
}

func TestRetentionKeepFor(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client, pubsub.WithKeepFor(300*time.Millisecond))
	publish(t, ps, "news", "a", "b")
	ctx := testCtx(t)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := ps.Trim(ctx, "news"); err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client.Get(ctx, "news/.m/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still kept after 10s", resp.Count)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	rev := publish(t, ps, "news", "c")[0]
	sub := subscribe(t, ps, "news", pubsub.After(0))
	ev := next(t, sub)
	if ev.Gap == nil || ev.Gap.Count != 2 {
		t.Fatalf("first event %+v gap %v, want a gap of 2", ev, ev.Gap)
	}
	wantMsg(t, next(t, sub), rev, "c")
}

// Compaction alone loses nothing: a subscriber resumes from the retained
// messages, not from etcd's history.
func TestSubscribeAcrossCompaction(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	revs := publish(t, ps, "news", "a", "b")
	if _, err := srv.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, ps, "news", pubsub.After(revs[0]))
	wantMsg(t, next(t, sub), revs[1], "b")
}

func TestValidation(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	ctx := testCtx(t)
	for _, topic := range []string{"", "a//b", "a/.m", "/a", "a\x00"} {
		if _, err := ps.Publish(ctx, topic, nil); !errors.Is(err, pubsub.ErrInvalidTopic) || !errors.Is(err, pubsub.ErrInvalidName) {
			t.Errorf("Publish(%q): %v, want ErrInvalidTopic", topic, err)
		}
		if _, err := ps.Subscribe(ctx, topic, pubsub.Now); !errors.Is(err, pubsub.ErrInvalidTopic) {
			t.Errorf("Subscribe(%q): %v, want ErrInvalidTopic", topic, err)
		}
		if _, err := ps.Trim(ctx, topic); !errors.Is(err, pubsub.ErrInvalidTopic) {
			t.Errorf("Trim(%q): %v, want ErrInvalidTopic", topic, err)
		}
	}
	big := make([]byte, names.MaxValueBytes+1)
	if _, err := ps.Publish(ctx, "t", big); !errors.Is(err, pubsub.ErrTooLarge) || !errors.Is(err, pubsub.ErrValueTooLarge) {
		t.Errorf("Publish(too large): %v, want ErrTooLarge", err)
	}
	if _, err := ps.Subscribe(ctx, "t", pubsub.After(-1)); !errors.Is(err, pubsub.ErrInvalidPosition) {
		t.Errorf("Subscribe(After(-1)): %v, want ErrInvalidPosition", err)
	}
	if _, err := ps.Watch(ctx, ""); !errors.Is(err, pubsub.ErrInvalidKey) {
		t.Errorf("Watch(\"\"): %v, want ErrInvalidKey", err)
	}
	for _, o := range []pubsub.Option{pubsub.WithKeepLast(0), pubsub.WithKeepFor(0), pubsub.WithStallTimeout(-1)} {
		if _, err := pubsub.New(srv.Client, o); !errors.Is(err, pubsub.ErrInvalidOption) {
			t.Errorf("New: %v, want ErrInvalidOption", err)
		}
	}
	// Nothing was written.
	resp, err := srv.Client.Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d keys written by rejected calls", resp.Count)
	}
}

func TestSubscriptionEndsWithContext(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client)
	ctx, cancel := context.WithCancel(testCtx(t))
	sub, err := ps.Subscribe(ctx, "news", pubsub.Now)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Err() != nil {
		t.Fatalf("Err while running = %v", sub.Err())
	}
	cancel()
	for range sub.C() {
	}
	if !errors.Is(sub.Err(), context.Canceled) {
		t.Fatalf("Err = %v, want context.Canceled", sub.Err())
	}
}
