package faults

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/pubsub"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Bugs the fault suite found, each pinned by a focused test.

// NewSession must return by its context's deadline. At 69dea6d it opened
// the session's anchor watch itself, and clientv3's Watch blocks until the
// server confirms the watch: on a slow connection NewSession returned a
// session after its deadline, and on a connection that stalled after the
// lease grant it blocked until the session was lost (the fault suite saw
// workers stuck there more than 30 s after their context ended). Fixed in
// 83cbc43 (the session's goroutine opens the anchor); kept as a regression
// test.
func TestNewSessionHonoursContext(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	px := embedtest.NewProxy(t, srv.Endpoints[0])
	c, err := px.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	// Warm the connection up, then make every message take 400 ms each
	// way: the grant answers after about 1.2 s, inside the deadline; the
	// anchor watch takes another 0.8 s, past it.
	if _, err := c.Get(context.Background(), "warm"); err != nil {
		t.Fatal(err)
	}
	px.Delay(400*time.Millisecond, 0)
	defer px.Undelay()
	const budget = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(5*time.Second))
	took := time.Since(start)
	if s != nil {
		defer closeSession(s)
	}
	if took > budget+200*time.Millisecond {
		t.Errorf("NewSession with a %v deadline returned after %v (err %v)", budget, took.Round(time.Millisecond), err)
	}
}

// A Claim that fails must leave no claim behind (DESIGN: a blocking call
// that ends with an error "leaves no key behind"). When the Claim's context
// ends while its claim transaction is in flight, the transaction can land:
// the item is then claimed under the caller's session, the caller never
// gets it, and nobody else can claim it until that session ends. The fault
// suite saw an item held that way for a whole run (some 25 s, with two
// consumers claiming) and only orphaned when the session closed.
func TestQueueFailedClaimLeavesNoClaim(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	px := embedtest.NewProxy(t, srv.Endpoints[0])
	c, err := px.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession(s)
	q, err := queue.New(c, "bugq")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := queue.New(srv.Client, "bugq")
	if err != nil {
		t.Fatal(err)
	}
	// Every message through the proxy takes 100 ms each way, so a round
	// trip takes about 200 ms; deadlines from 250 ms up fall, one of them,
	// while the claim transaction (Claim's second round trip) is in flight.
	px.Delay(100*time.Millisecond, 0)
	defer px.Undelay()
	for i := range 20 {
		if _, err := admin.Enqueue(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
		deadline := 250*time.Millisecond + time.Duration(i)*25*time.Millisecond
		cctx, cancel := context.WithTimeout(ctx, deadline)
		cl, err := q.Consumer(s).Claim(cctx)
		cancel()
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = cl.Ack(actx)
			cancel()
			continue
		}
		// The failed Claim may clean up after itself; give it a TTL.
		var held []string
		gone := pollUntil(ctx, s.TTL(), func() bool {
			held = held[:0]
			st, err := queue.Inspect(ctx, srv.Client, "bugq")
			if err != nil {
				return false
			}
			for _, it := range st.Claimed {
				if it.Lease == s.Lease() {
					held = append(held, it.ID)
				}
			}
			return len(held) == 0
		})
		if !gone {
			t.Fatalf("Claim with a %v deadline returned %v, yet item %v stays claimed under its live session (%v later)",
				deadline, err, held, s.TTL())
		}
		// Drain what is left so the next round starts empty.
		for range 5 {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			cl, err := admin.Consumer(mustSession(t, srv)).TryClaim(dctx)
			cancel()
			if err != nil {
				break
			}
			_ = cl.Ack(ctx)
		}
	}
}

func mustSession(t *testing.T, srv *embedtest.Server) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(context.Background(), srv.Client, concurrency.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeSession(s) })
	return s
}

// The same rule for the other waits: a Lock, Acquire or Campaign that fails
// (its context ends at any point, even while its request is in flight)
// leaves no key under the caller's lease once the call has had a TTL to
// clean up.
func TestFailedWaitsLeaveNoKey(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	px := embedtest.NewProxy(t, srv.Endpoints[0])
	c, err := px.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession(s)
	type call struct {
		name, prefix string
		try          func(ctx context.Context) (release func(), err error)
	}
	m, _ := lock.NewMutex(s, "bugl")
	sem, _ := semaphore.New(s, "bugs", 1)
	defer sem.Close(context.Background())
	el, _ := election.New(s, "buge")
	calls := []call{
		{"Lock", "bugl/", func(ctx context.Context) (func(), error) {
			err := m.Lock(ctx)
			return func() { _ = m.Unlock(context.Background()) }, err
		}},
		{"Acquire", "bugs/.sem/p/", func(ctx context.Context) (func(), error) {
			p, err := sem.Acquire(ctx)
			return func() { _ = p.Release(context.Background()) }, err
		}},
		{"Campaign", "buge/", func(ctx context.Context) (func(), error) {
			l, err := el.Campaign(ctx, "v")
			return func() { _ = l.Resign(context.Background()) }, err
		}},
	}
	px.Delay(100*time.Millisecond, 0)
	defer px.Undelay()
	for _, cl := range calls {
		for i := range 5 {
			deadline := 100*time.Millisecond + time.Duration(i)*30*time.Millisecond
			cctx, cancel := context.WithTimeout(ctx, deadline)
			release, err := cl.try(cctx)
			cancel()
			if err == nil {
				release()
				continue
			}
			var left []string
			if !pollUntil(ctx, s.TTL(), func() bool {
				left = left[:0]
				resp, err := srv.Client.Get(ctx, cl.prefix, clientv3.WithPrefix())
				if err != nil {
					return false
				}
				for _, kv := range resp.Kvs {
					if kv.Lease == int64(s.Lease()) {
						left = append(left, string(kv.Key))
					}
				}
				return len(left) == 0
			}) {
				t.Errorf("%s with a %v deadline returned %v and left %v under its live session", cl.name, deadline, err, left)
				break
			}
		}
	}
}

// One holder at a time, while etcd members crash and restart: two processes
// take a Mutex in turn and write their token under its Guard; from etcd's
// record, every write must land while its token's key is first in line.
// Since d0db76e (line keys reuse their names) it fails in about one run in
// three: a waiter is admitted while the key ahead of it still exists, right
// after that key's session deleted and re-created a key of the same name.
// The likely path: a waiter watches the key ahead by name, from "now"; a
// watch is served from the local store of the member it lands on, and a
// member that has just restarted is behind, so the watch can deliver the
// deletion of the name's previous incarnation, which the waiter (n == 1)
// counts as the key ahead leaving, without checking the event's revision
// against the key it watches. The fault suite's checkpoint workers (the same
// pattern) saw it three times, each while a member was hard-stopped.
func TestLockOneHolderWhileMembersCrash(t *testing.T) {
	cl := embedtest.StartCluster(t, 3, embedtest.FastTicks())
	ctx, cancel := context.WithTimeout(context.Background(), scaled(time.Minute))
	defer cancel()
	resp, err := cl.Client.Get(ctx, "\x00start")
	if err != nil {
		t.Fatal(err)
	}
	recCtx, stopRec := context.WithCancel(ctx)
	rec := startRecorder(recCtx, cl.Client, resp.Header.Revision+1)
	defer func() { stopRec(); <-rec.done }()
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var writes atomic.Int64
	for range 2 {
		c, err := cl.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for i := 0; i < 1000 && runCtx.Err() == nil; i++ {
				sctx, cancel := opCtx(runCtx)
				s, err := concurrency.NewSession(sctx, c, concurrency.WithTTL(2*time.Second))
				cancel()
				if err != nil {
					continue
				}
				m, _ := lock.NewMutex(s, "one")
				for j := 0; j < 100000 && runCtx.Err() == nil && s.Err() == nil; j++ {
					lctx, cancel := context.WithTimeout(runCtx, scaled(waitTimeout))
					err := m.Lock(lctx)
					cancel()
					if err != nil {
						sleepCtx(runCtx, 20*time.Millisecond)
						continue
					}
					for range 3 {
						octx, cancel := opCtx(runCtx)
						_, err := m.Guard().Do(octx, clientv3.OpPut("one-data", strconv.FormatInt(int64(m.Token()), 10)))
						cancel()
						if err != nil {
							break
						}
						writes.Add(1)
					}
					uctx, cancel := opCtx(runCtx)
					_ = m.Unlock(uctx)
					cancel()
				}
				closeSession(s)
			}
		})
	}
	for round := range 3 {
		sleepCtx(ctx, 500*time.Millisecond)
		m := round % 3
		if lead, err := cl.Leader(ctx); err == nil && round == 0 {
			m = lead
		}
		cl.HardStop(m)
		sleepCtx(ctx, 1500*time.Millisecond)
		if err := cl.Restart(m); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	wg.Wait()
	end, err := cl.Client.Put(ctx, "\x00end", "")
	if err != nil {
		t.Fatal(err)
	}
	if !pollUntil(ctx, 10*time.Second, func() bool { return rec.seenRev() >= end.Header.Revision }) {
		t.Fatal("record incomplete")
	}
	if err := rec.err(); err != nil {
		t.Fatal(err)
	}
	events := rec.all()
	ls := lives(events, "one/.lock/")
	bad := 0
	for _, e := range puts(events, "one-data") {
		tok, _ := strconv.ParseInt(e.value, 10, 64)
		if !holds(ls, e.rev-1, 1, tok) {
			bad++
			if bad <= 5 {
				first := firstAt(ls, e.rev-1, 1)
				// The deletions of earlier keys of the same name as the key
				// ahead (its name was reused).
				var earlier []int64
				for _, l := range ls {
					if len(first) > 0 && l.key == first[0].key && l.create < first[0].create && l.end > 0 {
						earlier = append(earlier, l.end)
					}
				}
				prev := int64(0)
				if len(earlier) > 0 {
					prev = earlier[len(earlier)-1]
				}
				t.Errorf("token %d wrote at rev %d while %v was first in line (line: %v); the previous key of that name was deleted at rev %d",
					tok, e.rev, first, firstAt(ls, e.rev-1, 10), prev)
			}
		}
	}
	t.Logf("%d guarded writes, %d by a token that did not hold", writes.Load(), bad)
	if writes.Load() < 10 {
		t.Errorf("only %d guarded writes", writes.Load())
	}
}

// A subscription must never skip a message silently (pubsub's doc: "never
// skips one silently ... reported as a Gap"), across a partition of its
// client while a follower restarts and history is compacted every second.
// Here: a 3-member cluster compacted every second, a publisher on topic ps
// (KeepLast(10)) and pl (KeepUntilCompaction), one subscriber process
// (its own proxies) subscribed to both on one client; a follower is
// hard-stopped, the subscriber's network cut (blackholed) for 2.9 s (its pl
// reader stops reading meanwhile and resubscribes with Resume afterwards)
// and the follower restarted. The ps subscription once skipped about 70
// messages with no Gap here: the proxy's blackhole then dropped bytes from
// a live connection that carried on, which no network does; embedtest's
// Proxy now ends the connections a blackhole cut (see RELIABILITY.md).
func TestPubsubNoSilentSkipAfterPartition(t *testing.T) {
	cl := embedtest.StartCluster(t, 3, embedtest.FastTicks())
	e := &env{t: t, cl: cl, mem: cl, admin: cl.Client, ttl: sessionTTL(), hist: &history{}}
	p := e.newProc("pubsub", "sub")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keep, _ := pubsub.New(cl.Client, pubsub.WithKeepLast(10))
	logc, _ := pubsub.New(cl.Client, pubsub.WithKeepUntilCompaction())
	sc, _ := pubsub.New(p.client, pubsub.WithStallTimeout(3*time.Second))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var revs []int64
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if r, err := keep.Publish(ctx, "ps", []byte(strconv.Itoa(i))); err == nil {
				mu.Lock()
				revs = append(revs, r)
				mu.Unlock()
			}
			_, _ = logc.Publish(ctx, "pl", []byte(strconv.Itoa(i)))
			time.Sleep(20 * time.Millisecond)
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			time.Sleep(time.Second)
			if r, err := cl.Client.Get(ctx, "x"); err == nil {
				_, _ = cl.Client.Compact(ctx, r.Header.Revision)
			}
		}
	})
	var parked sync.Mutex // held: the pl reader stops reading
	wg.Go(func() {
		pos := pubsub.After(0)
		for ctx.Err() == nil {
			sctx, c2 := context.WithCancel(ctx)
			sub, err := sc.Subscribe(sctx, "pl", pos)
			if err != nil {
				c2()
				continue
			}
			for ev := range sub.C() {
				pos = pubsub.Resume(ev)
				if !parked.TryLock() {
					parked.Lock()
					parked.Unlock()
					break
				}
				parked.Unlock()
			}
			c2()
			for range sub.C() {
			}
		}
	})
	sub, err := sc.Subscribe(ctx, "ps", pubsub.After(0))
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]bool{}
	var evs []pubsub.Event
	var last, lastSeq int64
	bad := 0
	wg.Go(func() {
		for ev := range sub.C() {
			evs = append(evs, ev)
			if ev.Gap != nil {
				for r := ev.Gap.From; r <= ev.Gap.To; r++ {
					got[r] = true
				}
				last, lastSeq = ev.Gap.To, ev.Seq
				continue
			}
			if ev.Seq != 0 && lastSeq != 0 && ev.Seq != lastSeq+1 {
				bad++
			}
			got[ev.Revision] = true
			last, lastSeq = ev.Revision, ev.Seq
		}
	})
	for i := range 1 { // one round: it skipped in each of 3 runs
		time.Sleep(time.Second)
		leader, err := cl.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f := (leader + 1 + i%2) % 3
		cl.HardStop(f)
		time.Sleep(time.Second)
		parked.Lock()
		p.cut(false)
		go func() { _ = e.restart(ctx, f) }()
		time.Sleep(2900 * time.Millisecond)
		p.mend()
		parked.Unlock()
		time.Sleep(6 * time.Second)
	}
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()
	missed := 0
	for _, r := range revs {
		if r <= last && !got[r] {
			missed++
			if missed == 1 {
				for k, ev := range evs {
					if ev.Gap == nil && ev.Revision > r {
						for _, x := range evs[max(0, k-2):min(len(evs), k+2)] {
							t.Logf("around the first skipped message (rev %d): event rev %d seq %d gap %v", r, x.Revision, x.Seq, x.Gap)
						}
						break
					}
				}
			}
		}
	}
	t.Logf("%d published to ps, last position %d, %d skipped silently, %d Seq jumps without a gap", len(revs), last, missed, bad)
	if missed > 0 || bad > 0 {
		t.Errorf("subscription skipped %d messages silently (%d Seq jumps)", missed, bad)
	}
}
