package semaphore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/semaphore"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// grant is one permit as its holder saw it: its token, and the revision of
// a write that landed only because the permit was held (under its Guard).
type grant struct {
	token   int64
	fenceAt int64
}

// fence records that the permit is held: a key written under the permit's
// Guard (it lands only while the permit exists) and under the holder's lease
// (it goes when the permit's lease goes).
func fence(ctx context.Context, p *semaphore.Permit, lease clientv3.LeaseID) (int64, error) {
	resp, err := p.Guard().Do(ctx, clientv3.OpPut(fenceKey(int64(p.Token())), "", clientv3.WithLease(lease)))
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

func unfence(ctx context.Context, p *semaphore.Permit) error {
	_, err := p.Guard().Do(ctx, clientv3.OpDelete(fenceKey(int64(p.Token()))))
	return err
}

const stressName = "stress"

func fenceKey(token int64) string { return fmt.Sprintf("%s/fence/%d", stressName, token) }

// Sessions on separate connections contend for K permits while the limit is
// raised and lowered and holders crash (their leases expire). Every grant
// must be justified by etcd's own record: at some revision between the
// permit's creation and its guarded write, fewer than the stored limit of
// keys were ahead of it. Replaying etcd's history, at no revision may more
// permits be held, or fence keys exist, than the limit in force (permits
// granted before the limit was lowered count against the old limit until
// released).
func TestStressNeverMoreThanLimit(t *testing.T) {
	stress(t, stressRun{clients: 4, perClient: 3, rounds: 20, limit: 3, steps: []limitStep{{40, 5}, {100, 2}, {170, 4}}})
}

// The same with waiters far back in line (32 contenders, limits 2 and 3:
// most join with 6 limits' worth or more ahead), who wait in windows and
// are granted on a read of the line that carries the limit (see line's
// waitWindow and ReadAlong).
func TestStressWindowsNeverMoreThanLimit(t *testing.T) {
	stress(t, stressRun{clients: 8, perClient: 4, rounds: 8, limit: 2, steps: []limitStep{{40, 3}, {100, 2}, {170, 3}}})
}

// stressRun is one stress test's shape: contenders (clients times
// perClient), each acquiring rounds times; the limit stored first, and
// its changes after so many grants.
type stressRun struct {
	clients, perClient, rounds, limit int
	steps                             []limitStep
}

type limitStep struct {
	after int64
	limit int
}

func stress(t *testing.T, run stressRun) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	clients, perClient, rounds := run.clients, run.perClient, run.rounds
	startResp, err := srv.Client.Get(ctx, "\x00")
	if err != nil {
		t.Fatal(err)
	}
	startRev := startResp.Header.Revision

	var mu sync.Mutex
	var grants []grant
	record := func(g grant) {
		mu.Lock()
		grants = append(grants, g)
		mu.Unlock()
	}
	var granted atomic.Int64
	var inside, maxInside atomic.Int32
	errs := make(chan error, 100)

	admin := newSem(t, newSession(t, srv.Client, 5*time.Second), stressName, run.limit, semaphore.WithFollowLimit())
	if _, err := admin.Limit(ctx); err != nil { // store it
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range clients {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		s := newSession(t, c, 2*time.Second)
		sem := newSem(t, s, stressName, run.limit, semaphore.WithFollowLimit())
		for range perClient {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					p, err := sem.Acquire(ctx)
					if err != nil {
						errs <- fmt.Errorf("Acquire: %w", err)
						return
					}
					n := inside.Add(1)
					for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
					}
					at, err := fence(ctx, p, s.Lease())
					if err != nil {
						errs <- fmt.Errorf("fenced write of token %d: %w", p.Token(), err)
					}
					record(grant{token: int64(p.Token()), fenceAt: at})
					granted.Add(1)
					time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
					if err := unfence(ctx, p); err != nil {
						errs <- fmt.Errorf("unfence %d: %w", p.Token(), err)
					}
					inside.Add(-1)
					if err := p.Release(ctx); err != nil {
						errs <- fmt.Errorf("Release: %w", err)
						return
					}
				}
			}()
		}
	}

	// Crashing holders: each takes a permit on a 1 s session and dies
	// holding it (no more keepalives); the permit returns at lease expiry.
	var crashed atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := srv.NewClient()
		if err != nil {
			errs <- err
			return
		}
		for _, at := range []int64{30, 120} {
			if !waitGrants(ctx, &granted, at) {
				return
			}
			s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(crashTTL()))
			if err != nil {
				errs <- err
				return
			}
			sem, _ := semaphore.New(s, stressName, 1, semaphore.WithFollowLimit())
			p, err := sem.Acquire(ctx)
			if err != nil {
				errs <- fmt.Errorf("crasher Acquire: %w", err)
				sem.Close(context.Background())
				_ = s.Close(ctx)
				return
			}
			at, err := fence(ctx, p, s.Lease())
			if err != nil {
				errs <- fmt.Errorf("crasher fenced write: %w", err)
			}
			record(grant{token: int64(p.Token()), fenceAt: at})
			sem.Close(context.Background())
			s.Orphan() // crash: its permit stays until the lease expires
			crashed.Add(1)
		}
	}()

	// The limit changes mid-run: raised, lowered below the holders, raised.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, step := range run.steps {
			if !waitGrants(ctx, &granted, step.after) {
				return
			}
			if err := admin.SetLimit(ctx, step.limit); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if crashed.Load() != 2 {
		t.Fatalf("%d crashes, want 2", crashed.Load())
	}
	// No permit leaks: the crashed holders' permits go with their leases.
	waitLine(t, srv.Client, stressName, 0)
	endResp, err := srv.Client.Put(ctx, stressName+"/zz-end", "")
	if err != nil {
		t.Fatal(err)
	}
	highest := run.limit
	for _, st := range run.steps {
		highest = max(highest, st.limit)
	}
	if most := maxInside.Load(); int(most) > highest {
		t.Errorf("%d holders inside at once in-process, the highest limit was %d", most, highest)
	}
	checkHistory(t, srv.Client, startRev, endResp.Header.Revision, grants)
}

// waitGrants polls until n grants were made; false if ctx ended first.
func waitGrants(ctx context.Context, granted *atomic.Int64, n int64) bool {
	for granted.Load() < n {
		if ctx.Err() != nil {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// checkHistory replays etcd's history of the semaphore's keys and checks
// every grant and every revision against the limit in force.
func checkHistory(t *testing.T, c *clientv3.Client, startRev, endRev int64, grants []grant) {
	t.Helper()
	h := newHistory()
	wctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	wch := c.Watch(wctx, stressName+"/", clientv3.WithPrefix(), clientv3.WithRev(startRev+1), clientv3.WithPrevKV())
	var pending []*clientv3.Event
	flush := func() {
		if len(pending) > 0 {
			h.apply(t, pending)
			pending = pending[:0]
		}
	}
	done := false
	for wr := range wch {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if len(pending) > 0 && pending[0].Kv.ModRevision != ev.Kv.ModRevision {
				flush()
			}
			pending = append(pending, ev)
			if ev.Kv.ModRevision >= endRev {
				done = true
			}
		}
		if done {
			break
		}
	}
	flush()
	cancel()
	for range wch {
	}

	tokens := map[int64]bool{}
	for _, g := range grants {
		if tokens[g.token] {
			t.Errorf("token %d granted twice", g.token)
		}
		tokens[g.token] = true
		adm, ok := h.admitted[g.token]
		switch {
		case !ok:
			t.Errorf("token %d granted, but etcd's record never had fewer than the limit ahead of it", g.token)
		case adm > g.fenceAt:
			t.Errorf("token %d: guarded write at revision %d, before etcd's record admits it (revision %d)", g.token, g.fenceAt, adm)
		}
	}
	if len(h.admitted) < len(grants) {
		t.Errorf("%d keys admitted in the record, %d grants", len(h.admitted), len(grants))
	}
	t.Logf("%d grants over revisions %d..%d; limits %v; most held at once %d, most fence keys %d; %d revisions checked",
		len(grants), startRev, endRev, h.limits, h.maxHeld, h.maxFenced, h.revisions)
}

// history is the semaphore's state rebuilt from etcd's events.
type history struct {
	limit     int
	limits    []int
	line      []int64          // create revisions of the permit keys, sorted
	keys      map[string]int64 // permit key -> create revision
	admitted  map[int64]int64  // token -> first revision it was within the limit
	fenced    map[int64]bool   // tokens with a fence key
	lowerRev  int64            // revision of the latest lowering
	maxHeld   int
	maxFenced int
	revisions int
}

func newHistory() *history {
	return &history{keys: map[string]int64{}, admitted: map[int64]int64{}, fenced: map[int64]bool{}}
}

// apply applies the events of one revision and checks the state after it.
func (h *history) apply(t *testing.T, evs []*clientv3.Event) {
	t.Helper()
	rev := evs[0].Kv.ModRevision
	h.revisions++
	permits := stressName + "/.sem/p/"
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		del := ev.Type == mvccpb.DELETE
		switch {
		case key == stressName+"/.sem/limit":
			n, err := strconv.Atoi(string(ev.Kv.Value))
			if err != nil {
				t.Fatalf("limit %q at %d", ev.Kv.Value, rev)
			}
			if n < h.limit {
				h.lowerRev = rev
			}
			h.limit = n
			h.limits = append(h.limits, n)
		case strings.HasPrefix(key, permits) && del:
			cr := h.keys[key]
			delete(h.keys, key)
			i, _ := slices.BinarySearch(h.line, cr)
			h.line = slices.Delete(h.line, i, i+1)
		case strings.HasPrefix(key, permits):
			if _, ok := h.keys[key]; ok {
				continue // a re-write of a live key
			}
			h.keys[key] = ev.Kv.CreateRevision
			i, _ := slices.BinarySearch(h.line, ev.Kv.CreateRevision)
			h.line = slices.Insert(h.line, i, ev.Kv.CreateRevision)
		case strings.HasPrefix(key, stressName+"/fence/"):
			tok, _ := strconv.ParseInt(strings.TrimPrefix(key, stressName+"/fence/"), 10, 64)
			if del {
				delete(h.fenced, tok)
			} else {
				h.fenced[tok] = true
			}
		}
	}
	// Keys within the limit at this revision are admitted from now on.
	for i, cr := range h.line {
		if i >= h.limit {
			break
		}
		if _, ok := h.admitted[cr]; !ok {
			h.admitted[cr] = rev
		}
	}
	held, grandfathered := 0, 0
	for _, cr := range h.line {
		if adm, ok := h.admitted[cr]; ok {
			held++
			if adm < h.lowerRev {
				grandfathered++
			}
		}
	}
	for tok := range h.fenced {
		if _, ok := h.admitted[tok]; !ok {
			t.Errorf("revision %d: fence key of token %d, which etcd's record never admitted", rev, tok)
		}
	}
	bound := max(h.limit, grandfathered)
	if held > bound || len(h.fenced) > bound {
		t.Errorf("revision %d: %d permits held, %d fence keys; limit %d (%d granted before it was lowered)",
			rev, held, len(h.fenced), h.limit, grandfathered)
	}
	h.maxHeld = max(h.maxHeld, held)
	h.maxFenced = max(h.maxFenced, len(h.fenced))
}

// crashTTL is the TTL of sessions that crash in the stress test: the
// shortest the server grants (1 s with FastTicks, 2 s on an external
// cluster with default settings).
func crashTTL() time.Duration {
	if embedtest.External() {
		return 2 * time.Second
	}
	return time.Second
}
