package pubsub_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// stepClock returns a clock for pubsub.SetClock that reads start, then
// start+step, and so on.
func stepClock(start, step int64) func() time.Time {
	var n atomic.Int64
	return func() time.Time { return time.Unix(0, start+step*(n.Add(1)-1)) }
}

// stampOf is the publish time stamped in a message key suffix.
func stampOf(t *testing.T, suffix string) int64 {
	t.Helper()
	if suffix == "" || suffix == "-" {
		return 0
	}
	ns, err := strconv.ParseUint(suffix[:16], 16, 64)
	if err != nil {
		t.Fatalf("bad key suffix %q", suffix)
	}
	return int64(ns)
}

// floorView is a topic's floor as stored: the trim record's fields, the
// floor markers, and the live messages (key suffix to value).
type floorView struct {
	count       int64
	floor, next string
	markers     []string
	live        map[string]string
}

func readFloor(t *testing.T, c *clientv3.Client, topic string) floorView {
	t.Helper()
	ctx := testCtx(t)
	var v floorView
	rec, err := c.Get(ctx, topic+"/.trim")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Kvs) > 0 {
		f := strings.Fields(string(rec.Kvs[0].Value))
		v.count, _ = strconv.ParseInt(f[1], 10, 64)
		if len(f) == 4 {
			v.floor, v.next = strings.TrimPrefix(f[2], "-"), strings.TrimPrefix(f[3], "-")
		}
	}
	ms, err := c.Get(ctx, topic+"/.f/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range ms.Kvs {
		v.markers = append(v.markers, strings.TrimPrefix(string(kv.Key), topic+"/.f/"))
	}
	live, err := c.Get(ctx, topic+"/.m/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	v.live = map[string]string{}
	for _, kv := range live.Kvs {
		v.live[strings.TrimPrefix(string(kv.Key), topic+"/.m/")] = string(kv.Value)
	}
	return v
}

// check fails t unless the floor holds: its one marker is the record's
// floor, no live message sorts below it, and retention kept keep of
// published messages and counted the rest as trimmed.
func (v floorView) check(t *testing.T, published, keep int) {
	t.Helper()
	v.checkFloor(t)
	if len(v.live) != keep || v.count != int64(published-keep) {
		t.Errorf("%d messages live, %d trimmed; want %d, %d", len(v.live), v.count, keep, published-keep)
	}
}

// checkFloor fails t unless the floor holds: its one marker is the
// record's floor, and no live message sorts below it.
func (v floorView) checkFloor(t *testing.T) {
	t.Helper()
	if v.floor == "" {
		t.Fatalf("no floor in the trim record")
	}
	if len(v.markers) != 1 || v.markers[0] != v.floor {
		t.Errorf("markers %q, want only the floor %q", v.markers, v.floor)
	}
	for k, val := range v.live {
		if k < v.floor {
			t.Errorf("message %q (%q) below the floor %q", k, val, v.floor)
		}
	}
}

// A trim reads the topic from its floor, not from its first key: the
// keys of trimmed messages that etcd keeps until compaction are not walked
// again at every trim (BenchmarkPublishTrimmed).
func TestTrimReadsFromFloor(t *testing.T) {
	defer pubsub.SetFullReadEvery(1 << 30)()
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	var from atomic.Value // where the last trim's read began
	from.Store("")
	c := rangeClient(t, srv.NewClientWith, func(rr *pb.RangeRequest) {
		if rr.SortTarget != pb.RangeRequest_CREATE {
			return
		}
		if _, suffix, ok := strings.Cut(string(rr.Key), "news/.m/"); ok {
			from.Store(suffix)
		}
	})
	ps := newPubSub(t, c, pubsub.WithKeepLast(10)) // a trim at every Publish
	pubsub.SetClock(ps, stepClock(1000, 10))       // message i stamped 1000+10i
	for i := range 300 {
		publish(t, ps, "news", fmt.Sprint(i))
	}
	readFloor(t, srv.Client, "news").check(t, 300, 10)
	// The last trim read from the floor: about the lowest key the trim
	// before it kept (message 288's), not from message 0's.
	if got := stampOf(t, from.Load().(string)); got < 1000+10*280 {
		t.Fatalf("the last trim read from stamp %d, want at least %d (below it: trimmed messages only)", got, 1000+10*280)
	}
}

// A publisher whose clock is behind the floor stamps its key just above
// the floor, if that is at most a minute ahead of its clock, or else
// lowers the floor to its key (a Client whose clock was ahead set it);
// either way retention trims its message in its turn.
func TestPublisherBehindTheFloor(t *testing.T) {
	for _, behindBy := range []time.Duration{30 * time.Second, time.Hour} {
		t.Run(fmt.Sprint(behindBy), func(t *testing.T) {
			defer pubsub.SetFullReadEvery(1 << 30)()
			srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
			ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
			behind := newPubSub(t, srv.Client, pubsub.WithKeepLast(1000)) // does not trim
			pubsub.SetClock(behind, func() time.Time { return time.Now().Add(-behindBy) })
			for i := range 50 {
				publish(t, ps, "news", fmt.Sprint(i))
			}
			sub := subscribe(t, ps, "news", pubsub.Now)
			rev := publish(t, behind, "news", "late")[0]
			v := readFloor(t, srv.Client, "news")
			v.check(t, 51, 11) // the late message is not trimmed yet
			ev := next(t, sub)
			wantMsg(t, ev, rev, "late")
			switch late := time.Since(ev.Time); {
			case behindBy < time.Minute && late > time.Second:
				t.Errorf("late message stamped %v ago, want just above the floor's message", late)
			case behindBy > time.Minute && (late < behindBy-time.Second || late > behindBy+time.Second):
				t.Errorf("late message stamped %v ago, want its clock's %v (the floor lowered)", late, behindBy)
			}
			for i := range 20 {
				publish(t, ps, "news", fmt.Sprint(50+i))
				// Not even for a while below the floor: a trim from
				// there would not see it.
				readFloor(t, srv.Client, "news").checkFloor(t)
			}
			v = readFloor(t, srv.Client, "news")
			v.check(t, 71, 10)
			for _, val := range v.live {
				if val == "late" {
					t.Errorf("the late message was not trimmed")
				}
			}
		})
	}
}

// A message written below the new floor between a trim's read and its
// transaction (its publisher's clock behind) makes the transaction fail:
// the trim reads again and keeps it, instead of leaving it below the floor
// where no later trim would see it.
func TestTrimSeesKeySlippedBelowFloor(t *testing.T) {
	defer pubsub.SetFullReadEvery(1 << 30)()
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	pubsub.SetClock(ps, stepClock(1000, 10))
	slipper := newPubSub(t, srv.Client, pubsub.WithKeepLast(1000)) // does not trim
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(i))
	}
	var fired atomic.Bool
	defer pubsub.SetAfterTrimRead(func() {
		v := readFloor(t, srv.Client, "news")
		lo, hi := stampOf(t, v.floor), stampOf(t, v.next)
		if lo == 0 || hi <= lo+1 || !fired.CompareAndSwap(false, true) {
			return
		}
		pubsub.SetClock(slipper, func() time.Time { return time.Unix(0, lo+1) })
		publish(t, slipper, "news", "slipped")
	})()
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(30+i))
	}
	if !fired.Load() {
		t.Fatal("no trim read a floor and a next apart")
	}
	v := readFloor(t, srv.Client, "news")
	v.check(t, 61, 10)
	for _, val := range v.live {
		if val == "slipped" {
			t.Errorf("the slipped message was not trimmed")
		}
	}
}

// Message keys below the floor, written by a version before floors (whose
// clock was behind), are trimmed in their turn: one trim in
// fullReadEvery reads the whole topic. A trim record rewritten by such a
// version (no floor) makes the next trim read the whole topic and replace
// the marker it left.
func TestOlderVersionBelowFloor(t *testing.T) {
	defer pubsub.SetFullReadEvery(8)()
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	pubsub.SetClock(ps, stepClock(1000, 10))
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(i))
	}
	// An older version's Publish: no floor check.
	if _, err := srv.Client.Put(ctx, fmt.Sprintf("news/.m/%016x%08x", 5, 0), "stray"); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(30+i))
	}
	v := readFloor(t, srv.Client, "news")
	v.check(t, 61, 10)
	for _, val := range v.live {
		if val == "stray" {
			t.Errorf("the stray message was not trimmed")
		}
	}
	// An older version's trim writes the record without the floor.
	if _, err := srv.Client.Put(ctx, "news/.trim", fmt.Sprintf("%d %d", 1, v.count)); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(60+i))
	}
	readFloor(t, srv.Client, "news").check(t, 91, 10)
}

// msgReads records where a client's reads of a topic's message keys begin
// (each range of them, alone or in a transaction).
type msgReads struct {
	prefix string
	mu     sync.Mutex
	from   []string
}

func (m *msgReads) client(t *testing.T, newClient func(...grpc.DialOption) (*clientv3.Client, error)) *clientv3.Client {
	t.Helper()
	return rangeClient(t, newClient, func(r *pb.RangeRequest) {
		if _, suffix, ok := strings.Cut(string(r.Key), m.prefix); ok {
			m.mu.Lock()
			m.from = append(m.from, suffix)
			m.mu.Unlock()
		}
	})
}

// take returns the recorded beginnings and forgets them.
func (m *msgReads) take() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	from := m.from
	m.from = nil
	return from
}

// A subscription that resumes, from etcd's history or by listing, reads the
// topic's message keys from its floor (as last seen, from a trim record or
// a marker's event), not from the first key: it does not walk the keys of
// the messages trimmed since etcd's last compaction. Its numbering stays
// exact.
func TestResumeReadsFromFloor(t *testing.T) {
	for _, list := range []bool{false, true} {
		t.Run(fmt.Sprintf("list=%v", list), func(t *testing.T) {
			if list {
				t.Cleanup(pubsub.SetHistoryResume(0))
			}
			srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
			p := embedtest.NewProxy(t, srv.Endpoints[0])
			pub := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
			for i := range 100 {
				publish(t, pub, "news", fmt.Sprint(i))
			}
			reads := &msgReads{prefix: "news/.m/"}
			ps := newPubSub(t, reads.client(t, p.NewClientWith), pubsub.WithStallTimeout(300*time.Millisecond))
			sub := subscribe(t, ps, "news", pubsub.Now)
			var seen string // a floor the subscription has seen the marker of
			for i := range 50 {
				if i == 49 {
					seen = readFloor(t, srv.Client, "news").floor
				}
				rev := publish(t, pub, "news", fmt.Sprint(100+i))[0]
				ev := next(t, sub)
				wantMsg(t, ev, rev, fmt.Sprint(100+i))
				if ev.Seq != int64(101+i) {
					t.Fatalf("message %d numbered %d", 100+i, ev.Seq)
				}
			}
			reads.take()
			p.Pause()
			revs := publish(t, pub, "news", "a", "b", "c")
			waitPast(t, 700*time.Millisecond) // past the stall timeout
			p.Unpause()
			for i, m := range []string{"a", "b", "c"} {
				ev := next(t, sub)
				wantMsg(t, ev, revs[i], m)
				if ev.Seq != int64(151+i) {
					t.Fatalf("%s numbered %d, want %d", m, ev.Seq, 151+i)
				}
			}
			floor := readFloor(t, srv.Client, "news").floor
			from := reads.take()
			if len(from) == 0 {
				t.Fatal("the resume read no message keys")
			}
			for _, f := range from {
				// From the floor of the last marker event it had (its
				// message 149 came after it), or a later one.
				if f < seen || f > floor {
					t.Fatalf("a resume read from %q; want a floor from %q to %q", f, seen, floor)
				}
			}
		})
	}
}

// A listing that finds the topic's floor below the one the subscription saw
// (an older version's trim dropped it from the record) lists again from
// there: a message an older version's publisher wrote below the floor it
// saw is delivered, with its number.
func TestListingBelowADroppedFloor(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	pub := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	var rev int64
	for i := range 50 {
		rev = publish(t, pub, "news", fmt.Sprint(i))[0]
	}
	v := readFloor(t, srv.Client, "news")
	// An older version's trim rewrites the record without the floor, and
	// its publisher writes below the floor.
	if _, err := srv.Client.Put(ctx, "news/.trim", fmt.Sprintf("%d %d", 1, v.count)); err != nil {
		t.Fatal(err)
	}
	put, err := srv.Client.Put(ctx, fmt.Sprintf("news/.m/%016x%08x", 5, 0), "stray")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := pubsub.CatchUp(ctx, newPubSub(t, srv.Client), "news", rev, 50, v.floor)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Fatalf("events %+v, want the stray message", evs)
	}
	wantMsg(t, evs[0], put.Header.Revision, "stray")
	if evs[0].Seq != 51 {
		t.Fatalf("stray numbered %d, want 51", evs[0].Seq)
	}
}

// A whole read that finds a key an older version wrote below the floor,
// after trims from the floor went past its revision, deletes it first and
// leaves the trim record's revision where it was: subscribers that start
// after a trimmed revision get the right gap and numbers.
func TestWholeReadKeepsTrimRecordRev(t *testing.T) {
	restore := pubsub.SetFullReadEvery(1 << 30)
	defer func() { restore() }()
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	var revs []int64
	for i := range 30 {
		revs = append(revs, publish(t, ps, "news", fmt.Sprint(i))...)
	}
	if _, err := srv.Client.Put(ctx, fmt.Sprintf("news/.m/%016x%08x", 5, 0), "stray"); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		revs = append(revs, publish(t, ps, "news", fmt.Sprint(30+i))...)
	}
	before := readFloor(t, srv.Client, "news") // 50 trimmed, 11 live
	rec, err := pubsub.Inspect(ctx, srv.Client, "news")
	if err != nil {
		t.Fatal(err)
	}
	restore()
	restore = pubsub.SetFullReadEvery(1) // every trim reads the whole topic
	if n, err := newPubSub(t, srv.Client, pubsub.WithKeepLast(10)).Trim(ctx, "news"); err != nil || n != 1 {
		t.Fatalf("Trim: %d, %v; want the stray deleted", n, err)
	}
	after := readFloor(t, srv.Client, "news")
	for _, val := range after.live {
		if val == "stray" {
			t.Fatalf("the whole read did not delete the stray message")
		}
	}
	if after.count != before.count+1 {
		t.Fatalf("trimmed %d, want %d", after.count, before.count+1)
	}
	// After message 35: messages 36-49 and the stray were trimmed.
	sub := subscribe(t, ps, "news", pubsub.After(revs[35]))
	ev := next(t, sub)
	if ev.Gap == nil || ev.Gap.From != revs[35]+1 || ev.Gap.To < revs[49] || ev.Seq != 51 {
		t.Fatalf("event %+v gap %v, want a gap from %d past %d numbered 51 (record %+v)", ev, ev.Gap, revs[35]+1, revs[49], rec)
	}
	ev = next(t, sub)
	wantMsg(t, ev, revs[50], "50")
	if ev.Seq != 52 {
		t.Fatalf("message 50 numbered %d, want 52", ev.Seq)
	}
}

// A trim that finds the floor below the one it read from (an older
// version's trim dropped it from the record) reads again from there: a key
// written below the floor it knew is seen, and deleted first (the oldest).
func TestTrimReadsAgainBelowADroppedFloor(t *testing.T) {
	defer pubsub.SetFullReadEvery(1 << 30)()
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(i))
	}
	if _, err := srv.Client.Put(ctx, fmt.Sprintf("news/.m/%016x%08x", 5, 0), "stray"); err != nil {
		t.Fatal(err)
	}
	for i := range 15 { // trims from the floor, which do not see the stray
		publish(t, ps, "news", fmt.Sprint(30+i))
	}
	v := readFloor(t, srv.Client, "news")
	if _, err := srv.Client.Put(ctx, "news/.trim", fmt.Sprintf("%d %d", 1, v.count)); err != nil {
		t.Fatal(err)
	}
	publish(t, ps, "news", "45") // 12 live: its trim deletes 2, the stray first
	for _, val := range readFloor(t, srv.Client, "news").live {
		if val == "stray" {
			t.Fatalf("the trim after the floor was dropped did not see the stray message")
		}
	}
}

// Messages stamped by a clock ahead do not raise the floor past the
// trimmer's now: a publisher with a right clock goes on stamping its
// messages with its own time.
func TestFloorNotAheadOfNow(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(1))
	ahead := newPubSub(t, srv.Client, pubsub.WithKeepLast(1000)) // does not trim
	pubsub.SetClock(ahead, func() time.Time { return time.Now().Add(time.Hour) })
	for range 3 { // two trims that keep only messages stamped an hour ahead
		publish(t, ahead, "news", "ahead")
		if _, err := ps.Trim(ctx, "news"); err != nil {
			t.Fatal(err)
		}
	}
	v := readFloor(t, srv.Client, "news")
	v.checkFloor(t)
	if f := time.Unix(0, stampOf(t, v.floor)); f.After(time.Now()) {
		t.Fatalf("floor stamped %v, ahead of now", f)
	}
	sub := subscribe(t, ps, "news", pubsub.Now)
	rev := publish(t, ps, "news", "now")[0]
	ev := next(t, sub)
	wantMsg(t, ev, rev, "now")
	if d := time.Until(ev.Time); d > time.Minute {
		t.Fatalf("message stamped %v ahead", d)
	}
}

// A publisher whose clock is behind goes on stamping its messages as far
// ahead of its clock as it had to: stamped just above the floor each time,
// its messages would be the topic's lowest keys and hold the floor there.
func TestBehindPublisherDoesNotHoldTheFloor(t *testing.T) {
	defer pubsub.SetFullReadEvery(1 << 30)()
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(10))
	pubsub.SetClock(ps, stepClock(1000, 10))
	behind := newPubSub(t, srv.Client, pubsub.WithKeepLast(1000)) // does not trim
	pubsub.SetClock(behind, stepClock(500, 10))                   // the same pace, behind
	for i := range 30 {
		publish(t, ps, "news", fmt.Sprint(i))
	}
	start := stampOf(t, readFloor(t, srv.Client, "news").floor)
	for i := range 40 {
		publish(t, ps, "news", fmt.Sprint(30+i))
		publish(t, behind, "news", fmt.Sprint("behind", i))
		readFloor(t, srv.Client, "news").checkFloor(t)
	}
	if f := stampOf(t, readFloor(t, srv.Client, "news").floor); f < start+10*20 {
		t.Fatalf("floor stamped %d after 40 rounds from %d, want it to keep pace (at least %d)", f, start, start+10*20)
	}
}
