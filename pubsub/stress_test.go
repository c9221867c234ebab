package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// The stress test publishes from two clients with a small retention while
// the server compacts every second and subscribers are cut off at random:
// some by pausing their connection (the subscription resumes by itself),
// some by closing their client and subscribing again After the last
// revision they handled (the application's resume). Every subscriber's
// sequence must be in order, without duplicates, and account for every
// published message: delivered, or inside a gap whose count is exact.
// TestStressUntilCompaction runs the same with KeepUntilCompaction, where
// the gaps come from compaction overtaking a subscriber.
//
// PUBSUB_SEED=n replays a run's fault schedule.

const (
	stressTopic    = "stress"
	stressPublish  = 6 * time.Second
	stressPubLog   = 4 * time.Second      // KeepUntilCompaction
	stressInterval = 2 * time.Millisecond // per publisher
	stressKeep     = 30
	stressStall    = 400 * time.Millisecond
)

type subMode int

const (
	modeSteady    subMode = iota // never faulted
	modePause                    // connection paused now and then
	modeReconnect                // client closed and subscription re-opened now and then
)

func (m subMode) String() string {
	return [...]string{"steady", "pause", "reconnect"}[m]
}

// subLog is what one subscriber saw.
type subLog struct {
	mode subMode
	mu   sync.Mutex
	evs  []pubsub.Event
	// resumedAt[i]: evs[i] is the first event of a subscription re-opened
	// with After (not Resume).
	resumedAt map[int]bool
	last      int64 // highest revision accounted for
	lastEv    pubsub.Event
	unknown   int // gaps whose count could not be known
	errs      []error
}

func (l *subLog) add(ev pubsub.Event, resumed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if resumed {
		l.resumedAt[len(l.evs)] = true
	}
	l.evs = append(l.evs, ev)
	l.lastEv = ev
	if ev.Gap != nil {
		l.last = ev.Gap.To
	} else {
		l.last = ev.Revision
	}
}

// resume is where a re-opened subscription starts: half the time with
// Resume (the count is carried over), half with After (it may be lost).
func (l *subLog) resume(exact bool) pubsub.Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	if exact {
		return pubsub.Resume(l.lastEv)
	}
	return pubsub.After(l.last)
}

// lastHandled is the revision accounted for.
func (l *subLog) lastHandled() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *subLog) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

func stressSeed(t *testing.T) uint64 {
	if s := os.Getenv("PUBSUB_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PUBSUB_SEED: %v", err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

func TestStressFaultsAndCompaction(t *testing.T) {
	stress(t, stressPublish, pubsub.WithKeepLast(stressKeep))
}

func TestStressUntilCompaction(t *testing.T) {
	stress(t, stressPubLog, pubsub.WithKeepUntilCompaction())
}

// stress publishes for d with retention keep, and checks the subscribers.
func stress(t *testing.T, d time.Duration, keep pubsub.Option) {
	seed := stressSeed(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with PUBSUB_SEED=%d", seed)
		}
	})
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	// Subscribers, each behind its own proxy.
	modes := []subMode{modeSteady, modePause, modePause, modeReconnect, modeReconnect}
	logs := make([]*subLog, len(modes))
	subCtx, stopSubs := context.WithCancel(ctx)
	faultCtx, stopFaults := context.WithCancel(ctx)
	var subs sync.WaitGroup
	for i, mode := range modes {
		logs[i] = &subLog{mode: mode, resumedAt: map[int]bool{}}
		p := embedtest.NewProxy(t, srv.Endpoints[0])
		subRng := rand.New(rand.NewPCG(seed, uint64(i+1)))
		subs.Add(1)
		go func() {
			defer subs.Done()
			runSubscriber(subCtx, faultCtx, p, logs[i], subRng)
		}()
	}

	// Publishers.
	var pubMu sync.Mutex
	published := map[int64]string{}
	var pubErrs []error
	pubCtx, stopPub := context.WithTimeout(ctx, d)
	defer stopPub()
	var pubs sync.WaitGroup
	for p := range 2 {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		ps := newPubSub(t, c, keep)
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			tick := time.NewTicker(stressInterval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-pubCtx.Done():
					return
				case <-tick.C:
				}
				data := fmt.Sprintf("p%d-%d", p, i)
				// Not pubCtx: a Publish cut short by it may have landed.
				rev, err := ps.Publish(ctx, stressTopic, []byte(data))
				if err != nil {
					pubMu.Lock()
					pubErrs = append(pubErrs, err)
					pubMu.Unlock()
					return
				}
				pubMu.Lock()
				published[rev] = data
				pubMu.Unlock()
			}
		}()
	}

	// Compaction every second, until the subscribers are checked.
	compactCtx, stopCompact := context.WithCancel(ctx)
	compactDone := make(chan int)
	go func() {
		n := 0
		defer func() { compactDone <- n }()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-compactCtx.Done():
				return
			case <-tick.C:
				if _, err := srv.Compact(compactCtx); err == nil {
					n++
				}
			}
		}
	}()

	pubs.Wait()
	stopFaults()
	if len(pubErrs) > 0 {
		t.Errorf("publish errors: %v", pubErrs)
	}
	var lastPub int64
	for rev := range published {
		lastPub = max(lastPub, rev)
	}

	// Every subscriber catches up to the last published message.
	deadline := time.Now().Add(30 * time.Second)
	for i, l := range logs {
		for l.lastHandled() < lastPub && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		if got := l.lastHandled(); got < lastPub {
			t.Errorf("subscriber %d (%s) reached revision %d, want %d", i, l.mode, got, lastPub)
		}
	}
	stopCompact()
	compactions := <-compactDone
	stopSubs()
	subs.Wait()

	revs := make([]int64, 0, len(published))
	for rev := range published {
		revs = append(revs, rev)
	}
	slices.Sort(revs)
	gaps, lost := 0, int64(0)
	for i, l := range logs {
		for _, err := range l.errs {
			t.Errorf("subscriber %d: %v", i, err)
		}
		g, n := checkSequence(t, i, l, revs, published, lastPub)
		gaps += g
		lost += n
		t.Logf("subscriber %d (%s): %d events, %d gaps (%d of unknown count) losing %d messages, %d re-opened",
			i, l.mode, len(l.evs), g, l.unknown, n, len(l.resumedAt))
	}
	t.Logf("seed %d: %d messages published, %d compactions, %d gaps losing %d messages across %d subscribers",
		seed, len(published), compactions, gaps, lost, len(logs))
	if compactions == 0 {
		t.Errorf("no compaction ran")
	}
}

// runSubscriber subscribes and records events until subCtx ends, injecting
// its mode's faults until faultCtx ends.
func runSubscriber(subCtx, faultCtx context.Context, p *embedtest.Proxy, l *subLog, rng *rand.Rand) {
	resumed := false
	for subCtx.Err() == nil {
		c, err := p.NewClient()
		if err != nil {
			l.fail(err)
			return
		}
		ps, err := pubsub.New(c, pubsub.WithStallTimeout(stressStall))
		if err != nil {
			l.fail(err)
			return
		}
		ctx, cancel := context.WithCancel(subCtx)
		exact := rng.IntN(2) == 0
		sub, err := ps.Subscribe(ctx, stressTopic, l.resume(exact))
		if err != nil {
			cancel()
			l.fail(err)
			return
		}
		reopen := consume(ctx, faultCtx, p, sub, l, rng, resumed && !exact)
		cancel()
		for ev := range sub.C() { // events sent before the cancel was seen
			l.add(ev, false)
		}
		if !errors.Is(sub.Err(), context.Canceled) {
			l.fail(fmt.Errorf("subscription ended with %v", sub.Err()))
		}
		_ = c.Close()
		if !reopen {
			return
		}
		resumed = true
		// Stay away a while, as a restarting process would.
		down := time.NewTimer(100*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second))))
		select {
		case <-down.C:
		case <-faultCtx.Done():
			down.Stop()
		}
	}
}

// consume records sub's events and injects faults; it reports true when the
// subscription should be closed and re-opened on a new client.
func consume(ctx, faultCtx context.Context, p *embedtest.Proxy, sub *pubsub.Subscription, l *subLog, rng *rand.Rand, resumed bool) bool {
	faults := l.mode != modeSteady
	var fault <-chan time.Time
	var timer *time.Timer
	nextFault := func(lo, hi time.Duration) {
		timer = time.NewTimer(lo + time.Duration(rng.Int64N(int64(hi-lo)+1)))
		fault = timer.C
	}
	if faults {
		nextFault(200*time.Millisecond, 1200*time.Millisecond)
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// Pause, not Blackhole: a blackhole drops bytes from the middle of a
	// TCP stream, which no real network does, and leaves the client's
	// gRPC connection READY but broken for good (its HPACK state is out of
	// step with the server's: every new request is reset with
	// PROTOCOL_ERROR, and keepalive pings still pass).
	cutOff, restore := p.Pause, p.Unpause
	paused := false
	defer func() {
		if paused {
			restore()
		}
	}()
	first := resumed
	for {
		select {
		case ev, ok := <-sub.C():
			if !ok {
				return false
			}
			l.add(ev, first)
			first = false
		case <-faultCtx.Done():
			if paused {
				restore()
				paused = false
			}
			faultCtx = context.Background() // no more faults
			fault = nil
		case <-fault:
			switch {
			case l.mode == modeReconnect:
				return true
			case paused:
				restore()
				paused = false
				nextFault(200*time.Millisecond, 1200*time.Millisecond)
			default:
				cutOff()
				paused = true
				nextFault(300*time.Millisecond, 1500*time.Millisecond)
			}
		case <-ctx.Done():
			return false
		}
	}
}

// checkSequence checks one subscriber's events against what was published;
// it returns its number of gaps and of messages they report lost.
func checkSequence(t *testing.T, i int, l *subLog, revs []int64, published map[int64]string, lastPub int64) (gaps int, lost int64) {
	t.Helper()
	var prev int64
	next := 0 // index in revs of the next message not yet accounted for
	for j, ev := range l.evs {
		if ev.Gap == nil {
			if ev.Revision <= prev {
				t.Errorf("subscriber %d event %d: revision %d after %d (out of order or duplicate)", i, j, ev.Revision, prev)
				return
			}
			if want, ok := published[ev.Revision]; !ok || want != string(ev.Data) {
				t.Errorf("subscriber %d event %d: message %q at %d, published %q", i, j, ev.Data, ev.Revision, want)
				return
			}
			for next < len(revs) && revs[next] < ev.Revision {
				t.Errorf("subscriber %d: message at %d neither delivered nor in a gap (next delivered %d)", i, revs[next], ev.Revision)
				return
			}
			if ev.Seq != int64(next+1) {
				t.Errorf("subscriber %d event %d: message at %d numbered %d, want %d", i, j, ev.Revision, ev.Seq, next+1)
				return
			}
			next++
			prev = ev.Revision
			continue
		}
		g := ev.Gap
		if g.From <= prev || g.To < g.From {
			t.Errorf("subscriber %d event %d: %v after revision %d", i, j, g, prev)
			return
		}
		for next < len(revs) && revs[next] < g.From {
			t.Errorf("subscriber %d: message at %d neither delivered nor in a gap (next %v)", i, revs[next], g)
			return
		}
		in := int64(0)
		for next < len(revs) && revs[next] <= g.To {
			in++
			next++
		}
		gaps++
		lost += in
		if ev.Seq != int64(next) {
			t.Errorf("subscriber %d event %d: %v numbered %d, want %d", i, j, g, ev.Seq, next)
			return
		}
		switch {
		case g.Count == in:
		case g.Count == -1 && l.resumedAt[j]:
			l.unknown++
			// The first gap of a re-opened subscription whose start was
			// compacted: its count is unknowable, its range is not.
		default:
			t.Errorf("subscriber %d event %d: %v, but %d published messages lie in it", i, j, g, in)
			return
		}
		prev = g.To
	}
	if prev < lastPub {
		t.Errorf("subscriber %d: accounted up to %d, last published %d", i, prev, lastPub)
	}
	return gaps, lost
}
