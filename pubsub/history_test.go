package pubsub_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// wantSeq checks that ev is the message data at rev numbered seq.
func wantSeq(t *testing.T, ev pubsub.Event, rev int64, data string, seq int64) {
	t.Helper()
	wantMsg(t, ev, rev, data)
	if ev.Seq != seq {
		t.Fatalf("message %q numbered %d, want %d", data, ev.Seq, seq)
	}
}

func wantGap(t *testing.T, ev pubsub.Event, from, to, count, seq int64) {
	t.Helper()
	if ev.Gap == nil || *ev.Gap != (pubsub.Gap{From: from, To: to, Count: count}) || ev.Seq != seq {
		t.Fatalf("event %+v gap %v, want gap [%d, %d] of %d numbered %d", ev, ev.Gap, from, to, count, seq)
	}
}

// A topic kept until compaction is one key whose versions are the
// messages; subscribers need no option to read it, from any position.
func TestUntilCompactionSubscribe(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	pub := newPubSub(t, srv.Client, pubsub.WithKeepUntilCompaction())
	ps := newPubSub(t, srv.Client) // a subscriber's options say nothing of the mode
	// Subscribed (most likely: its start does not depend on it) before the
	// topic has a message, so before its mode is known.
	resp, err := srv.Client.Get(testCtx(t), "news")
	if err != nil {
		t.Fatal(err)
	}
	early := subscribe(t, ps, "news", pubsub.After(resp.Header.Revision))
	before := time.Now()
	revs := publish(t, pub, "news", "a", "b", "c")
	for i, m := range []string{"a", "b", "c"} {
		wantSeq(t, next(t, early), revs[i], m, int64(i+1))
	}
	resp, err = srv.Client.Get(testCtx(t), "news/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 2 || string(resp.Kvs[0].Key) != "news/.log" || string(resp.Kvs[1].Key) != "news/.mode" {
		t.Fatalf("keys %v, want the log key and the mode record", resp.Kvs)
	}

	old := subscribe(t, ps, "news", pubsub.Oldest)
	for i, m := range []string{"a", "b", "c"} {
		ev := next(t, old)
		wantSeq(t, ev, revs[i], m, int64(i+1))
		if ev.Time.Before(before.Add(-time.Second)) || ev.Time.After(time.Now()) {
			t.Fatalf("message %q stamped %v", m, ev.Time)
		}
	}
	now := subscribe(t, ps, "news", pubsub.Now)
	after := subscribe(t, ps, "news", pubsub.After(revs[0]))
	from := subscribe(t, ps, "news", pubsub.From(revs[2]))
	wantSeq(t, next(t, after), revs[1], "b", 2)
	wantSeq(t, next(t, after), revs[2], "c", 3)
	wantSeq(t, next(t, from), revs[2], "c", 3)
	nothing(t, now, 100*time.Millisecond)
	d := publish(t, pub, "news", "d")[0]
	for _, sub := range []*pubsub.Subscription{early, old, now, after, from} {
		wantSeq(t, next(t, sub), d, "d", 4)
	}
	// Retention is etcd's: Trim deletes nothing.
	if n, err := pub.Trim(testCtx(t), "news"); err != nil || n != 0 {
		t.Fatalf("Trim = %d, %v; want 0, nil", n, err)
	}
}

// After a compaction, Oldest starts at the oldest revision etcd keeps,
// with the newest message up to it, and reports no gap; a subscriber that
// asked for older messages gets the exact gap.
func TestUntilCompactionStartAfterCompaction(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client, pubsub.WithKeepUntilCompaction())
	revs := publish(t, ps, "news", "a", "b", "c", "d", "e")
	// Revisions revs[3] and later are kept; d is the topic's state there.
	if _, err := srv.Client.Compact(testCtx(t), revs[3]); err != nil {
		t.Fatal(err)
	}
	old := subscribe(t, ps, "news", pubsub.Oldest)
	wantSeq(t, next(t, old), revs[3], "d", 4)
	wantSeq(t, next(t, old), revs[4], "e", 5)

	all := subscribe(t, ps, "news", pubsub.After(0))
	wantGap(t, next(t, all), 1, revs[3]-1, 3, 3)
	wantSeq(t, next(t, all), revs[3], "d", 4)

	// After a revision whose history is gone: the range is known, the
	// count is not; Resume carries it.
	mid := subscribe(t, ps, "news", pubsub.After(revs[0]))
	wantGap(t, next(t, mid), revs[0]+1, revs[3]-1, -1, 3)
	wantSeq(t, next(t, mid), revs[3], "d", 4)
	re := subscribe(t, ps, "news", pubsub.Resume(pubsub.Event{Revision: revs[0], Seq: 1}))
	wantGap(t, next(t, re), revs[0]+1, revs[3]-1, 2, 3)
	wantSeq(t, next(t, re), revs[3], "d", 4)

	// Compacted, but nothing after the start is lost.
	late := subscribe(t, ps, "news", pubsub.After(revs[2]))
	wantSeq(t, next(t, late), revs[3], "d", 4)
	caught := subscribe(t, ps, "news", pubsub.After(revs[4]))
	f := publish(t, ps, "news", "f")[0]
	wantSeq(t, next(t, caught), f, "f", 6)
	if _, err := srv.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// The topic's latest message outlives every compaction.
	old = subscribe(t, ps, "news", pubsub.Oldest)
	wantSeq(t, next(t, old), f, "f", 6)
}

// A paused subscriber resumes by itself after the last message it
// delivered: a compaction that did not reach its position loses nothing.
func TestUntilCompactionResumesWithoutLoss(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	pub := newPubSub(t, srv.Client, pubsub.WithKeepUntilCompaction())
	ps := newPubSub(t, cut, pubsub.WithStallTimeout(300*time.Millisecond))
	sub := subscribe(t, ps, "news", pubsub.Oldest)
	first := publish(t, pub, "news", "m0")[0]
	wantSeq(t, next(t, sub), first, "m0", 1)

	p.Pause() // not Blackhole: see stress_test.go
	var msgs []string
	for i := 1; i <= 20; i++ {
		msgs = append(msgs, fmt.Sprintf("m%d", i))
	}
	revs := publish(t, pub, "news", msgs...)
	if _, err := srv.Client.Compact(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	waitPast(t, 700*time.Millisecond) // past the stall timeout
	p.Unpause()
	for i, m := range msgs {
		wantSeq(t, next(t, sub), revs[i], m, int64(i+2))
	}
	nothing(t, sub, 100*time.Millisecond)
}

// A compaction that overtakes a paused subscriber: it reports exactly the
// messages it lost, then goes on from the oldest revision etcd keeps.
func TestUntilCompactionGapWhileBehind(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	pub := newPubSub(t, srv.Client, pubsub.WithKeepUntilCompaction())
	ps := newPubSub(t, cut, pubsub.WithStallTimeout(300*time.Millisecond))
	first := publish(t, pub, "news", "m0")[0]
	sub := subscribe(t, ps, "news", pubsub.Oldest)
	wantSeq(t, next(t, sub), first, "m0", 1)

	p.Pause()
	var msgs []string
	for i := 1; i <= 10; i++ {
		msgs = append(msgs, fmt.Sprintf("m%d", i))
	}
	revs := publish(t, pub, "news", msgs...)
	// Keep from m7 (Seq 8) on: m1..m6 are lost to the subscriber.
	if _, err := srv.Client.Compact(testCtx(t), revs[6]); err != nil {
		t.Fatal(err)
	}
	waitPast(t, 700*time.Millisecond)
	p.Unpause()
	wantGap(t, next(t, sub), first+1, revs[6]-1, 6, 7)
	for i := 6; i < 10; i++ {
		wantSeq(t, next(t, sub), revs[i], msgs[i], int64(i+2))
	}
	nothing(t, sub, 100*time.Millisecond)
}

// A topic's mode is fixed by its first message; options that contradict
// each other are refused.
func TestRetentionModeMismatch(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	keys := newPubSub(t, srv.Client)
	hist := newPubSub(t, srv.Client, pubsub.WithKeepUntilCompaction())
	ctx := testCtx(t)
	publish(t, keys, "a", "x")
	publish(t, hist, "b", "y")
	if _, err := hist.Publish(ctx, "a", []byte("no")); !errors.Is(err, pubsub.ErrRetentionMode) {
		t.Errorf("Publish until compaction to a topic of keys: %v, want ErrRetentionMode", err)
	}
	if _, err := keys.Publish(ctx, "b", []byte("no")); !errors.Is(err, pubsub.ErrRetentionMode) {
		t.Errorf("Publish of a key to a topic kept until compaction: %v, want ErrRetentionMode", err)
	}
	resp, err := srv.Client.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 3 { // a/.m/..., b/.log, b/.mode
		t.Errorf("keys %v after the refused Publish calls", resp.Kvs)
	}
	for _, opts := range [][]pubsub.Option{
		{pubsub.WithKeepUntilCompaction(), pubsub.WithKeepLast(5)},
		{pubsub.WithKeepFor(time.Minute), pubsub.WithKeepUntilCompaction()},
	} {
		if _, err := pubsub.New(srv.Client, opts...); !errors.Is(err, pubsub.ErrInvalidOption) {
			t.Errorf("New: %v, want ErrInvalidOption", err)
		}
	}
}
