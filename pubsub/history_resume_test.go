package pubsub_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// listings counts a client's listings of a topic's messages: reads of a
// range of its message keys that return keys, not only a count. etcd
// reads every retained message for one.
type listings struct {
	prefix string
	n      atomic.Int64
}

func (l *listings) see(r *pb.RangeRequest) {
	if len(r.RangeEnd) > 0 && !r.CountOnly && strings.HasSuffix(string(r.Key), l.prefix) {
		l.n.Add(1)
	}
}

// listingClient is a client made by newClient (a Server's or a Proxy's
// NewClientWith) whose listings of the topic's messages l counts.
func listingClient(t *testing.T, newClient func(...grpc.DialOption) (*clientv3.Client, error), l *listings) *clientv3.Client {
	t.Helper()
	return rangeClient(t, newClient, l.see)
}

// A subscription that starts near etcd's revision (Now, Resume, After a
// recent revision) reads the messages since from etcd's history, without
// listing the topic's retained messages (BenchmarkResume: 17-23 ms of
// server CPU for each start or resume at 10,000 retained, before); what
// retention deleted since its start is a gap, as with a listing. Once
// that history is compacted, After lists.
func TestStartFromHistoryListsNothing(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	keep := newPubSub(t, srv.Client)
	l := &listings{prefix: "news/.m/"}
	ps := newPubSub(t, listingClient(t, srv.NewClientWith, l))
	revs := publish(t, keep, "news", "a", "b", "c", "d", "e")
	now := subscribe(t, ps, "news", pubsub.Now)
	revs = append(revs, publish(t, keep, "news", "f")...)
	wantSeq := func(sub *pubsub.Subscription, i int) {
		t.Helper()
		ev := next(t, sub)
		wantMsg(t, ev, revs[i], string(rune('a'+i)))
		if ev.Seq != int64(i+1) {
			t.Fatalf("message %d numbered %d", i+1, ev.Seq)
		}
	}
	wantSeq(now, 5)
	d := pubsub.Event{Revision: revs[3], Seq: 4}
	for _, pos := range []pubsub.Position{pubsub.Resume(d), pubsub.After(d.Revision)} {
		sub := subscribe(t, ps, "news", pos)
		wantSeq(sub, 4)
		wantSeq(sub, 5)
	}
	if n := l.n.Load(); n != 0 {
		t.Fatalf("%d listings of the topic, want none", n)
	}
	trim := newPubSub(t, srv.Client, pubsub.WithKeepLast(2))
	if n, err := trim.Trim(testCtx(t), "news"); err != nil || n != 4 {
		t.Fatalf("trimmed %d, %v: want a to d", n, err)
	}
	// What retention deleted since the start is a gap, as a listing
	// reports it; the rest comes from history (e, f and the trim are 3
	// revisions after d, the last trimmed; 2 retained allow 4). After,
	// with no count, counts at c's revision.
	c := pubsub.Event{Revision: revs[2], Seq: 3}
	for _, pos := range []pubsub.Position{pubsub.Resume(c), pubsub.After(c.Revision)} {
		re := subscribe(t, ps, "news", pos)
		wantGap(t, next(t, re), revs[2]+1, revs[3], 1, 4)
		wantSeq(re, 4)
		wantSeq(re, 5)
	}
	if n := l.n.Load(); n != 0 {
		t.Fatalf("%d listings of the topic after a trim, want none", n)
	}
	if _, err := srv.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	after := subscribe(t, ps, "news", pubsub.After(c.Revision))
	wantGap(t, next(t, after), revs[2]+1, revs[3], -1, 4)
	wantSeq(after, 4)
}

// A start more than twice as many revisions behind as its topic retains
// messages lists them (a listing reads those; etcd's history, every
// revision since).
func TestStartBehindRetainedLists(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	pub := newPubSub(t, srv.Client)
	l := &listings{prefix: "news/.m/"}
	ps := newPubSub(t, listingClient(t, srv.NewClientWith, l))
	revs := publish(t, pub, "news", "a", "b")
	a := pubsub.Event{Revision: revs[0], Seq: 1}
	other := func() {
		t.Helper()
		if _, err := srv.Client.Put(testCtx(t), "other", "x"); err != nil {
			t.Fatal(err)
		}
	}
	other() // 2 revisions after a: history
	near := subscribe(t, ps, "news", pubsub.Resume(a))
	ev := next(t, near)
	wantMsg(t, ev, revs[1], "b")
	if n := l.n.Load(); n != 0 || ev.Seq != 2 {
		t.Fatalf("%d listings, b numbered %d; want none, 2", n, ev.Seq)
	}
	other()
	other()
	other() // 5 revisions after a, 2 messages retained: a listing
	far := subscribe(t, ps, "news", pubsub.Resume(a))
	ev = next(t, far)
	wantMsg(t, ev, revs[1], "b")
	if n := l.n.Load(); n != 1 || ev.Seq != 2 {
		t.Fatalf("%d listings, b numbered %d; want 1, 2", n, ev.Seq)
	}
}

// A subscription whose connection is cut resumes from etcd's history: it
// lists the topic once, when it starts from Oldest, and not again.
func TestResumeAfterCutListsNothing(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	l := &listings{prefix: "news/.m/"}
	pub := newPubSub(t, srv.Client)
	ps := newPubSub(t, listingClient(t, p.NewClientWith, l), pubsub.WithStallTimeout(300*time.Millisecond))
	sub := subscribe(t, ps, "news", pubsub.Oldest)
	// m0 may come with the listing; m0b, published once m0 is in, comes
	// with the watch, which is then up.
	revs := publish(t, pub, "news", "m0")
	wantMsg(t, next(t, sub), revs[0], "m0")
	revs = publish(t, pub, "news", "m0b")
	wantMsg(t, next(t, sub), revs[0], "m0b")
	if n := l.n.Load(); n != 1 {
		t.Fatalf("%d listings at the start, want 1", n)
	}
	p.Pause()
	revs = publish(t, pub, "news", "m1", "m2", "m3")
	waitPast(t, 700*time.Millisecond) // past the stall timeout
	p.Unpause()
	for i, m := range []string{"m1", "m2", "m3"} {
		ev := next(t, sub)
		wantMsg(t, ev, revs[i], m)
		if ev.Seq != int64(3+i) {
			t.Fatalf("%s numbered %d, want %d", m, ev.Seq, 3+i)
		}
	}
	if n := l.n.Load(); n != 1 {
		t.Fatalf("%d listings, want the start's only", n)
	}
}

// A start further behind etcd's revision than pubsub reads from history
// lists the topic instead (etcd would read every revision since, of every
// key, while writes wait).
func TestStartFarBehindLists(t *testing.T) {
	// First, so that it is restored after the subscriptions end.
	t.Cleanup(pubsub.SetHistoryResume(5))
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	pub := newPubSub(t, srv.Client)
	l := &listings{prefix: "news/.m/"}
	ps := newPubSub(t, listingClient(t, srv.NewClientWith, l))
	revs := publish(t, pub, "news", "a", "b", "c", "d", "e", "f", "g", "h")
	near := subscribe(t, ps, "news", pubsub.Resume(pubsub.Event{Revision: revs[5], Seq: 6}))
	ev := next(t, near)
	wantMsg(t, ev, revs[6], "g")
	if ev.Seq != 7 {
		t.Fatalf("g numbered %d, want 7", ev.Seq)
	}
	if n := l.n.Load(); n != 0 {
		t.Fatalf("%d listings 2 revisions behind, want none", n)
	}
	far := subscribe(t, ps, "news", pubsub.Resume(pubsub.Event{Revision: revs[0], Seq: 1}))
	ev = next(t, far)
	wantMsg(t, ev, revs[1], "b")
	if ev.Seq != 2 {
		t.Fatalf("b numbered %d, want 2", ev.Seq)
	}
	if l.n.Load() == 0 {
		t.Fatal("no listing 7 revisions behind, with history read up to 5")
	}
}

// A subscription to a topic kept until compaction resumes with its
// catch-up alone: it does not first read the trim record and count message
// keys (resumeFromHistory), which such a topic does not have.
func TestLogModeResumeReadsOnce(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	pub := newPubSub(t, srv.Client, pubsub.WithKeepUntilCompaction())
	var decides, catchUps atomic.Int64 // reads of the trim record without / with the mode record
	see := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*pb.TxnRequest); ok {
			var trim, mode bool
			for _, op := range r.Success {
				// Keys as sent: on an external cluster, under the
				// test's namespace.
				key := string(op.GetRequestRange().GetKey())
				trim = trim || strings.HasSuffix(key, "news/.trim")
				mode = mode || strings.HasSuffix(key, "news/.mode")
			}
			switch {
			case trim && mode:
				catchUps.Add(1)
			case trim:
				decides.Add(1)
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c, err := p.NewClientWith(grpc.WithChainUnaryInterceptor(see))
	if err != nil {
		t.Fatal(err)
	}
	ps := newPubSub(t, c, pubsub.WithStallTimeout(300*time.Millisecond))
	revs := publish(t, pub, "news", "m0")
	sub := subscribe(t, ps, "news", pubsub.Oldest)
	wantMsg(t, next(t, sub), revs[0], "m0")
	before := catchUps.Load()
	p.Pause()
	revs = publish(t, pub, "news", "m1", "m2")
	waitPast(t, 700*time.Millisecond) // past the stall timeout
	p.Unpause()
	for i, m := range []string{"m1", "m2"} {
		wantMsg(t, next(t, sub), revs[i], m)
	}
	if n := catchUps.Load(); n == before {
		t.Fatal("the subscription did not resume")
	}
	if n := decides.Load(); n != 0 {
		t.Fatalf("%d reads of the trim record without the mode record, want none", n)
	}
}
