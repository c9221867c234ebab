package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// TestFloorStress: five Clients whose clocks differ publish to and trim one
// topic at once (KeepLast, KeepFor, both; three publish often with clocks
// up to 3 s apart, two rarely, one 90 s ahead and one 90 s behind, so
// stamps are raised above the floor and floors lowered); subscribers start
// Now, Oldest and After and are cut off (proxy Pause) or reopened with
// Resume; the server compacts now and then. Throughout: one floor marker,
// the record's floor, no live key below it, none at or below the record's
// rev; at the end: the record's count is the messages published up to its
// rev, and every subscriber got every message once or inside a gap of the
// right count, with the same Seq.
//
// CONCORD_FLOOR_SEED=n replays a run's random choices (not its timing);
// CONCORD_FLOOR_SKEW=ms bounds the frequent publishers' clock offsets
// (default 3000); CONCORD_FLOOR_RARE_SKEW=ms the rare ones' (default
// 90000); CONCORD_FLOOR_DUR=ms how long to publish (default 2000).

const floorTopic = "fst"

type fsPub struct {
	data  string
	real  time.Time // when Publish returned, by this machine's real clock
	stamp time.Time // filled from the key
	skew  time.Duration
}

type fsSub struct {
	name   string
	mu     sync.Mutex
	evs    []pubsub.Event
	starts map[int]string // event index -> how the subscription that sent it began
	lastEv pubsub.Event
	has    bool
	errs   []error
}

func (s *fsSub) add(ev pubsub.Event, start string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if start != "" {
		s.starts[len(s.evs)] = start
	}
	s.evs = append(s.evs, ev)
	s.lastEv, s.has = ev, true
}

func (s *fsSub) last() (pubsub.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastEv, s.has
}

func (s *fsSub) reached() int64 {
	ev, ok := s.last()
	if !ok {
		return 0
	}
	if ev.Gap != nil {
		return ev.Gap.To
	}
	return ev.Revision
}

func envInt(name string, def int64) int64 {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			return n
		}
	}
	return def
}

type fsSnap struct {
	rev         int64
	recRev      int64
	count       int64
	floor, next string
	markers     []string
	live        map[string]int64 // suffix -> create revision
	liveByRev   map[int64]string
}

func fsRead(ctx context.Context, c *clientv3.Client) (fsSnap, error) {
	resp, err := c.Txn(ctx).Then(
		clientv3.OpGet(floorTopic+"/.trim"),
		clientv3.OpGet(floorTopic+"/.f/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(floorTopic+"/.m/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return fsSnap{}, err
	}
	s := fsSnap{rev: resp.Header.Revision, live: map[string]int64{}, liveByRev: map[int64]string{}}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		f := strings.Fields(string(kvs[0].Value))
		s.recRev, _ = strconv.ParseInt(f[0], 10, 64)
		s.count, _ = strconv.ParseInt(f[1], 10, 64)
		if len(f) == 4 {
			s.floor, s.next = strings.TrimPrefix(f[2], "-"), strings.TrimPrefix(f[3], "-")
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		s.markers = append(s.markers, strings.TrimPrefix(string(kv.Key), floorTopic+"/.f/"))
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		suf := strings.TrimPrefix(string(kv.Key), floorTopic+"/.m/")
		s.live[suf] = kv.CreateRevision
		s.liveByRev[kv.CreateRevision] = suf
	}
	return s, nil
}

// check returns the invariant violations of one snapshot.
func (s fsSnap) check() []string {
	var bad []string
	if s.floor == "" {
		if len(s.markers) != 0 {
			bad = append(bad, fmt.Sprintf("rev %d: markers %q with no floor in the record", s.rev, s.markers))
		}
	} else if len(s.markers) != 1 || s.markers[0] != s.floor {
		bad = append(bad, fmt.Sprintf("rev %d: markers %q, record floor %q", s.rev, s.markers, s.floor))
	}
	for k, r := range s.live {
		if k < s.floor {
			bad = append(bad, fmt.Sprintf("rev %d: live key %q (rev %d) below floor %q", s.rev, k, r, s.floor))
		}
		if r <= s.recRev {
			bad = append(bad, fmt.Sprintf("rev %d: live key %q rev %d <= trim record rev %d", s.rev, k, r, s.recRev))
		}
	}
	return bad
}

func TestFloorStress(t *testing.T) {
	seed := uint64(envInt("CONCORD_FLOOR_SEED", time.Now().UnixNano()))
	skewMax := time.Duration(envInt("CONCORD_FLOOR_SKEW", 3000)) * time.Millisecond
	dur := time.Duration(envInt("CONCORD_FLOOR_DUR", 2000)) * time.Millisecond
	rareSkew := time.Duration(envInt("CONCORD_FLOOR_RARE_SKEW", 90000)) * time.Millisecond
	t.Logf("CONCORD_FLOOR_SEED=%d skew ±%v (rare ±%v) for %v", seed, skewMax, rareSkew, dur)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with CONCORD_FLOOR_SEED=%d", seed)
		}
	})
	rng := rand.New(rand.NewPCG(seed, 0))
	defer pubsub.SetFullReadEvery(2 + rng.IntN(6))()
	defer pubsub.SetHistoryResume(int64(10 + rng.IntN(60)))()

	if d := envInt("CONCORD_FLOOR_TRIMDELAY", 2000); d > 0 {
		// Widen the window between a trim's read and its transaction.
		defer pubsub.SetAfterTrimRead(func() {
			if rand.IntN(2) == 0 {
				time.Sleep(time.Duration(rand.Int64N(d)) * time.Microsecond)
			}
		})()
	}
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx, cancel := context.WithTimeout(context.Background(), dur+60*time.Second)
	defer cancel()

	// Publishers.
	configs := [][]pubsub.Option{
		{pubsub.WithKeepLast(15)},
		{pubsub.WithKeepFor(300 * time.Millisecond)},
		{pubsub.WithKeepLast(25), pubsub.WithKeepFor(400 * time.Millisecond)},
		{pubsub.WithKeepLast(40)},
		{pubsub.WithKeepFor(600 * time.Millisecond)},
	}
	var pubMu sync.Mutex
	published := map[int64]*fsPub{}
	var pubErrs []error
	pubCtx, stopPub := context.WithTimeout(ctx, dur)
	defer stopPub()
	var pubs sync.WaitGroup
	var pubClients []*pubsub.Client
	for i, opts := range configs {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		ps := newPubSub(t, c, opts...)
		skew := time.Duration(rng.Int64N(int64(2*skewMax)+1)) - skewMax
		if i == 0 {
			skew = 0 // one right clock
		}
		rare := i >= 3
		if rare {
			skew = rareSkew // 3: ahead, 4: behind
			if i == 4 {
				skew = -rareSkew
			}
		}
		pubsub.SetClock(ps, func() time.Time { return time.Now().Add(skew) })
		pubClients = append(pubClients, ps)
		prng := rand.New(rand.NewPCG(seed, uint64(100+i)))
		t.Logf("publisher %d: skew %v", i, skew)
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for j := 0; pubCtx.Err() == nil; j++ {
				if rare {
					time.Sleep(100*time.Millisecond + time.Duration(prng.Int64N(int64(300*time.Millisecond))))
				} else {
					time.Sleep(time.Duration(prng.Int64N(int64(4 * time.Millisecond))))
				}
				if prng.IntN(20) == 0 {
					if _, err := ps.Trim(ctx, floorTopic); err != nil {
						pubMu.Lock()
						pubErrs = append(pubErrs, fmt.Errorf("trim %d: %w", i, err))
						pubMu.Unlock()
					}
					continue
				}
				data := fmt.Sprintf("c%d-%d", i, j)
				rev, err := ps.Publish(ctx, floorTopic, []byte(data))
				pubMu.Lock()
				if err != nil {
					pubErrs = append(pubErrs, fmt.Errorf("publish %d: %w", i, err))
				} else {
					published[rev] = &fsPub{data: data, real: time.Now(), skew: skew}
				}
				pubMu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}

	// Invariant checker.
	var checkMu sync.Mutex
	var violations []string
	checks := 0
	checkCtx, stopCheck := context.WithCancel(ctx)
	checkDone := make(chan struct{})
	go func() {
		defer close(checkDone)
		for checkCtx.Err() == nil {
			s, err := fsRead(checkCtx, srv.Client)
			if err == nil {
				checkMu.Lock()
				checks++
				violations = append(violations, s.check()...)
				checkMu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// Compaction now and then.
	compactDone := make(chan int)
	go func() {
		n := 0
		defer func() { compactDone <- n }()
		for {
			select {
			case <-checkCtx.Done():
				return
			case <-time.After(time.Duration(700+rng.IntN(800)) * time.Millisecond):
				if _, err := srv.Compact(checkCtx); err == nil {
					n++
				}
			}
		}
	}()

	// Subscribers.
	kinds := []string{"now", "oldest", "after0", "now-pause", "oldest-pause", "now-reopen", "after0-reopen", "late-after-pause"}
	subs := make([]*fsSub, len(kinds))
	subCtx, stopSubs := context.WithCancel(ctx)
	var subWG sync.WaitGroup
	for i, kind := range kinds {
		s := &fsSub{name: kind, starts: map[int]string{}}
		subs[i] = s
		p := embedtest.NewProxy(t, srv.Endpoints[0])
		srng := rand.New(rand.NewPCG(seed, uint64(200+i)))
		subWG.Add(1)
		go func() {
			defer subWG.Done()
			if strings.HasPrefix(kind, "late") {
				// Start After a revision in the middle of the run.
				select {
				case <-time.After(dur / 3):
				case <-subCtx.Done():
					return
				}
			}
			fsRunSub(subCtx, pubCtx, p, s, kind, srng)
		}()
	}

	pubs.Wait()
	if len(pubErrs) > 0 {
		t.Errorf("publish/trim errors: %v", pubErrs)
	}
	// A final trim by each client, so the record is settled.
	for _, ps := range pubClients {
		if _, err := ps.Trim(ctx, floorTopic); err != nil {
			t.Errorf("final trim: %v", err)
		}
	}
	var lastPub int64
	revs := make([]int64, 0, len(published))
	for rev := range published {
		revs = append(revs, rev)
		lastPub = max(lastPub, rev)
	}
	slices.Sort(revs)
	idx := make(map[int64]int, len(revs))
	for i, r := range revs {
		idx[r] = i
	}

	deadline := time.Now().Add(30 * time.Second)
	for _, s := range subs {
		for s.reached() < lastPub && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := s.reached(); got < lastPub {
			t.Errorf("subscriber %s reached %d, want %d", s.name, got, lastPub)
		}
	}
	stopCheck()
	<-checkDone
	compactions := <-compactDone
	stopSubs()
	subWG.Wait()

	checkMu.Lock()
	for i, v := range violations {
		if i < 20 {
			t.Errorf("invariant: %s", v)
		}
	}
	if len(violations) > 20 {
		t.Errorf("... %d violations in all", len(violations))
	}
	checkMu.Unlock()

	// Final state: trimmed + live = published, and the live ones are
	// exactly the published ones after the record's rev.
	fin, err := fsRead(ctx, srv.Client)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range fin.check() {
		t.Errorf("final invariant: %s", v)
	}
	if fin.count+int64(len(fin.live)) != int64(len(revs)) {
		t.Errorf("trimmed %d + live %d != published %d", fin.count, len(fin.live), len(revs))
	}
	var upTo int64
	for _, r := range revs {
		if r <= fin.recRev {
			upTo++
			if _, ok := fin.liveByRev[r]; ok {
				t.Errorf("message at %d <= record rev %d is live", r, fin.recRev)
			}
		} else if _, ok := fin.liveByRev[r]; !ok {
			t.Errorf("message at %d > record rev %d is not live", r, fin.recRev)
		}
	}
	if upTo != fin.count {
		t.Errorf("record says %d trimmed up to %d, %d published up to it", fin.count, fin.recRev, upTo)
	}
	for r := range fin.liveByRev {
		if _, ok := published[r]; !ok {
			t.Errorf("live key at %d that no Publish returned", r)
		}
	}

	// Subscribers.
	seqs := map[int64]int64{}
	for _, s := range subs {
		for _, err := range s.errs {
			t.Errorf("subscriber %s: %v", s.name, err)
		}
		fsCheckSub(t, s, revs, idx, published, seqs)
	}

	// Stamps: how far Event.Time is from the real publish time.
	var maxAhead, maxBehind time.Duration
	for _, s := range subs {
		for _, ev := range s.evs {
			if ev.Gap != nil {
				continue
			}
			p := published[ev.Revision]
			d := ev.Time.Sub(p.real)
			maxAhead, maxBehind = max(maxAhead, d), min(maxBehind, d)
		}
	}
	var maxSkew time.Duration
	for _, p := range published {
		maxSkew = max(maxSkew, p.skew)
	}
	// Per publisher: how far ahead of its own clock its keys were stamped.
	type offStat struct {
		n, ahead100 int
		max         time.Duration
	}
	offs := map[string]*offStat{}
	for _, s := range subs {
		for _, ev := range s.evs {
			if ev.Gap != nil {
				continue
			}
			p := published[ev.Revision]
			who := strings.Split(p.data, "-")[0]
			if offs[who] == nil {
				offs[who] = &offStat{}
			}
			o := offs[who]
			d := ev.Time.Sub(p.real.Add(p.skew)) // <= 0 unless stamped ahead of its clock
			o.n++
			if d > 100*time.Millisecond {
				o.ahead100++
			}
			o.max = max(o.max, d)
		}
	}
	for who, o := range offs {
		t.Logf("publisher %s: %d/%d deliveries stamped >100ms ahead of its clock, at most %v", who, o.ahead100, o.n, o.max)
	}
	t.Logf("%d published, %d trimmed, %d live at the end (floor %q), %d snapshots checked, %d compactions; stamps from %v to %v off real time (max clock skew ahead %v)",
		len(revs), fin.count, len(fin.live), fin.floor, checks, compactions, maxBehind, maxAhead, maxSkew)
	for _, s := range subs {
		g, u := 0, 0
		for _, ev := range s.evs {
			if ev.Gap != nil {
				g++
				if ev.Gap.Count < 0 {
					u++
				}
			}
		}
		t.Logf("subscriber %s: %d events, %d gaps (%d unknown), %d starts", s.name, len(s.evs), g, u, len(s.starts))
	}
}

func fsRunSub(ctx, faultCtx context.Context, p *embedtest.Proxy, s *fsSub, kind string, rng *rand.Rand) {
	first := true
	for ctx.Err() == nil {
		c, err := p.NewClient()
		if err != nil {
			s.errs = append(s.errs, err)
			return
		}
		ps, err := pubsub.New(c, pubsub.WithStallTimeout(300*time.Millisecond))
		if err != nil {
			s.errs = append(s.errs, err)
			return
		}
		var pos pubsub.Position
		start := "resume"
		switch {
		case !first:
			ev, _ := s.last()
			pos = pubsub.Resume(ev)
			if _, ok := s.last(); !ok {
				pos, start = pubsub.After(0), "after0"
			}
		case strings.HasPrefix(kind, "now"):
			pos, start = pubsub.Now, "now"
		case strings.HasPrefix(kind, "oldest"):
			pos, start = pubsub.Oldest, "oldest"
		case strings.HasPrefix(kind, "after0"):
			pos, start = pubsub.After(0), "after0"
		case strings.HasPrefix(kind, "late"):
			r, err := c.Get(ctx, "x")
			if err != nil {
				s.errs = append(s.errs, err)
				return
			}
			pos, start = pubsub.After(r.Header.Revision-int64(rng.IntN(200))), "after"
		}
		sctx, cancel := context.WithCancel(ctx)
		sub, err := ps.Subscribe(sctx, floorTopic, pos)
		if err != nil {
			// Subscribe's read gives up after the stall timeout (300
			// ms here: a loaded CI machine can take that long); a
			// caller starts again.
			cancel()
			_ = c.Close()
			if ctx.Err() != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		reopen := false
		pause := strings.HasSuffix(kind, "pause")
		reopener := strings.HasSuffix(kind, "reopen")
		var fault <-chan time.Time
		if (pause || reopener) && faultCtx.Err() == nil {
			fault = time.After(time.Duration(150+rng.IntN(900)) * time.Millisecond)
		}
		paused := false
		mark := start
	loop:
		for {
			select {
			case ev, ok := <-sub.C():
				if !ok {
					break loop
				}
				s.add(ev, mark)
				mark = ""
			case <-fault:
				switch {
				case reopener:
					reopen = true
					break loop
				case paused:
					p.Unpause()
					paused = false
				default:
					p.Pause()
					paused = true
				}
				if faultCtx.Err() == nil {
					fault = time.After(time.Duration(200+rng.IntN(1200)) * time.Millisecond)
				} else if paused {
					p.Unpause()
					paused = false
					fault = nil
				} else {
					fault = nil
				}
			case <-ctx.Done():
				break loop
			}
		}
		if paused {
			p.Unpause()
		}
		cancel()
		for ev := range sub.C() {
			s.add(ev, mark)
			mark = ""
		}
		if err := sub.Err(); !errors.Is(err, context.Canceled) {
			s.errs = append(s.errs, fmt.Errorf("subscription ended: %v", err))
		}
		_ = c.Close()
		first = false
		if !reopen {
			return
		}
		time.Sleep(time.Duration(50+rng.IntN(700)) * time.Millisecond)
	}
}

// fsCheckSub checks one subscriber's events: in order, each published
// message once or in a gap of exact count, Seq = index+1, consistent
// across subscribers (seqs).
func fsCheckSub(t *testing.T, s *fsSub, revs []int64, idx map[int64]int, published map[int64]*fsPub, seqs map[int64]int64) {
	t.Helper()
	var prev int64 = -1
	next := -1 // index in revs of the next message not accounted for
	for j, ev := range s.evs {
		start := s.starts[j]
		if ev.Gap == nil {
			i, ok := idx[ev.Revision]
			if !ok || published[ev.Revision].data != string(ev.Data) {
				t.Errorf("sub %s event %d: message %q at %d not published so", s.name, j, ev.Data, ev.Revision)
				return
			}
			if next >= 0 && i != next {
				if i < next {
					t.Errorf("sub %s event %d: message at %d (index %d) delivered again or out of order (next %d)", s.name, j, ev.Revision, i, next)
				} else {
					t.Errorf("sub %s event %d: messages %v skipped before %d", s.name, j, revs[next:i], ev.Revision)
				}
				return
			}
			if ev.Seq != int64(i+1) {
				t.Errorf("sub %s event %d: message at %d numbered %d, want %d", s.name, j, ev.Revision, ev.Seq, i+1)
				return
			}
			if o, ok := seqs[ev.Revision]; ok && o != ev.Seq {
				t.Errorf("sub %s: message %d numbered %d here, %d elsewhere", s.name, ev.Revision, ev.Seq, o)
			}
			seqs[ev.Revision] = ev.Seq
			next = i + 1
			prev = ev.Revision
			continue
		}
		g := ev.Gap
		if g.From <= prev || g.To < g.From {
			t.Errorf("sub %s event %d: %v after %d", s.name, j, g, prev)
			return
		}
		lo, _ := slices.BinarySearch(revs, g.From)
		hi, found := slices.BinarySearch(revs, g.To)
		if found {
			hi++
		}
		if next >= 0 && lo != next {
			t.Errorf("sub %s event %d: %v does not follow on (next unaccounted %d at index %d, gap starts at index %d)", s.name, j, g, revs[min(next, len(revs)-1)], next, lo)
			return
		}
		in := int64(hi - lo)
		switch {
		case g.Count == in:
		case g.Count == -1 && (start == "after" || start == "after0"):
		default:
			t.Errorf("sub %s event %d (start %q): %v holds %d published messages", s.name, j, start, g, in)
			return
		}
		if ev.Seq != 0 && ev.Seq != int64(hi) {
			t.Errorf("sub %s event %d: %v numbered %d, want %d", s.name, j, g, ev.Seq, hi)
			return
		}
		next = hi
		prev = g.To
	}
}
