package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/concordkit/concord/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	discService = "ds"
	discPrefix  = "ds/.instances/"
)

// discWL: registry processes, each with a Registry under its own lease,
// register and deregister instances of one service (every instance ID is
// used once); watcher processes keep a Watcher each and sample its view
// (its instances and the revision they reflect). A witness on the admin
// client stamps when each change to the service's keys became visible.
//
// Checked: every view equals etcd's record at the revision it reflects; no
// view shows an ID nobody registered; no view lags a change witnessed more
// than discBound earlier (counted from the end of its own process's stall,
// if later): so a deregistered or expired instance is gone from every
// watcher within discBound; after the faults, every watcher's view equals
// the registrations in etcd within discBound. Progress: acknowledged
// registrations that every watcher has reached.
type discWL struct {
	regs     []*proc
	watchers []*proc

	mu      sync.Mutex
	ws      []*discovery.Watcher
	acked   []int64  // revisions of acknowledged registrations
	live    []string // instance IDs still registered when the workers stopped
	stopOps context.CancelFunc
	opsWG   sync.WaitGroup
}

// discBound is how far a watcher's view may lag etcd once its own network
// is mended: the TTL and a few seconds.
func discBound(ttl time.Duration) time.Duration { return ttl + scaled(5*time.Second) }

func (w *discWL) name() string { return "discovery" }

func (w *discWL) setup(e *env) {
	for i := range 3 {
		w.regs = append(w.regs, e.newProc(w.name(), fmt.Sprintf("dreg%d", i)))
	}
	for i := range 2 {
		w.watchers = append(w.watchers, e.newProc(w.name(), fmt.Sprintf("dwatch%d", i)))
	}
}

// progress counts the acknowledged registrations every watcher has reached.
func (w *discWL) progress() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.ws) == 0 {
		return 0
	}
	low := int64(-1)
	for _, wt := range w.ws {
		if r := wt.Revision(); low < 0 || r < low {
			low = r
		}
	}
	var n int64
	for _, r := range w.acked {
		if r <= low {
			n++
		}
	}
	return n
}

func (w *discWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	opsCtx, stop := context.WithCancel(ctx)
	w.mu.Lock()
	w.stopOps = stop
	w.mu.Unlock()
	wg.Go(func() { w.witness(ctx, e) })
	for _, p := range w.watchers {
		wt, err := discovery.NewWatcher(p.client, discService)
		if err != nil {
			e.t.Errorf("discovery watcher: %v", err)
			return
		}
		w.mu.Lock()
		w.ws = append(w.ws, wt)
		w.mu.Unlock()
		wg.Go(func() { w.sample(ctx, e, p, wt) })
	}
	for i, p := range w.regs {
		reg, err := discovery.NewRegistry(p.client, discovery.WithTTL(e.ttl), discovery.WithLogger(newOpLog(e, p)))
		if err != nil {
			e.t.Errorf("discovery registry: %v", err)
			return
		}
		w.opsWG.Add(1)
		wg.Go(func() {
			w.register(opsCtx, e, p, i, reg)
			w.opsWG.Done()
			<-ctx.Done()
			cctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
			_ = reg.Close(cctx)
			cancel()
		})
	}
}

// register keeps one instance registered all along and two to four more
// coming and going: it registers new ones and deregisters old ones.
func (w *discWL) register(ctx context.Context, e *env, p *proc, idx int, reg *discovery.Registry) {
	rng := rand.New(rand.NewPCG(uint64(e.seed), uint64(100+idx)))
	var live []*discovery.Registration
	p.holding.Store(true) // its registrations, under its lease
	// One instance stays registered all along: when its lease is lost the
	// Registry must register it again.
	var keep *discovery.Registration
	for i := 0; i < 1000 && keep == nil && ctx.Err() == nil; i++ {
		id, start := p.name+"-keep", time.Now()
		octx, cancel := context.WithTimeout(ctx, scaled(waitTimeout))
		g, err := reg.Register(octx, discService, discovery.Instance{ID: id, Addr: "127.0.0.1:19999"})
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "register", start: start, out: ok, note: id}
		if err != nil {
			o.out, o.note = unknown, id+" "+err.Error()
			sleepCtx(ctx, 100*time.Millisecond)
		} else {
			o.token, o.rev, keep = int64(g.Token()), int64(g.Token()), g
			w.mu.Lock()
			w.acked = append(w.acked, o.rev)
			w.mu.Unlock()
		}
		e.hist.add(o)
	}
	if keep != nil {
		defer func() {
			w.mu.Lock()
			w.live = append(w.live, keep.Instance().ID)
			w.mu.Unlock()
		}()
	}
	tried := map[*discovery.Registration]bool{} // Deregister called
	for n := 0; n < 100000 && ctx.Err() == nil; n++ {
		stale := p.park(ctx)
		start := time.Now()
		octx, cancel := context.WithTimeout(ctx, scaled(waitTimeout))
		if len(live) < 2 || (len(live) < 4 && rng.IntN(2) == 0) {
			id := fmt.Sprintf("%s-%d", p.name, n)
			g, err := reg.Register(octx, discService, discovery.Instance{ID: id, Addr: fmt.Sprintf("127.0.0.1:%d", 20000+n)})
			o := op{proc: p.name, recipe: w.name(), kind: "register", start: start, out: ok, note: id, stale: stale}
			if err != nil {
				o.out, o.note = unknown, id+" "+err.Error()
			} else {
				o.token, o.rev = int64(g.Token()), int64(g.Token())
				live = append(live, g)
				w.mu.Lock()
				w.acked = append(w.acked, o.rev)
				w.mu.Unlock()
			}
			e.hist.add(o)
		} else {
			i := rng.IntN(len(live))
			g := live[i]
			tok := int64(g.Token())
			tried[g] = true // from now on it is not registered again, whatever the outcome
			err := g.Deregister(octx)
			o := op{proc: p.name, recipe: w.name(), kind: "deregister", start: start, out: ok, token: tok, note: g.Instance().ID, stale: stale}
			if err != nil {
				o.out, o.note = unknown, o.note+" "+err.Error() // tried again later
			} else {
				live = slices.Delete(live, i, i+1)
			}
			e.hist.add(o)
		}
		cancel()
		sleepCtx(ctx, 100*time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range live {
		if !tried[g] {
			w.live = append(w.live, g.Instance().ID)
		}
	}
}

// sample records the watcher's view now and then: every change, and at
// least every 250ms. A stall parks the sampler (and cuts the watcher's
// network); the view after it is judged from the end of the stall.
func (w *discWL) sample(ctx context.Context, e *env, p *proc, wt *discovery.Watcher) {
	defer wt.Close(context.Background())
	select {
	case <-wt.Synced():
	case <-ctx.Done():
		return
	}
	p.holding.Store(true) // its view
	var last string
	var lastAt time.Time
	for i := 0; i < 10000000 && ctx.Err() == nil; i++ {
		t0 := time.Now()
		if p.park(ctx) {
			e.hist.add(op{proc: p.name, recipe: w.name(), kind: "stall", start: t0, out: ok})
		}
		start := time.Now()
		r1 := wt.Revision()
		ins := wt.Instances()
		stale := wt.Stale()
		if r2 := wt.Revision(); r2 != r1 {
			continue // changed while read: read again
		}
		ids := make([]string, len(ins))
		for k, in := range ins {
			ids[k] = in.ID
		}
		note := viewNote(stale, ids)
		if note != last || r1 == 0 || time.Since(lastAt) > 250*time.Millisecond {
			e.hist.add(op{proc: p.name, recipe: w.name(), kind: "view", start: start, out: ok, rev: r1, note: note})
			last, lastAt = note, start
		}
		sleepCtx(ctx, 25*time.Millisecond)
	}
}

func viewNote(stale bool, ids []string) string {
	s := "fresh "
	if stale {
		s = "stale "
	}
	return s + strings.Join(ids, ",")
}

func viewIDs(note string) []string {
	_, list, _ := strings.Cut(note, " ")
	if list == "" {
		return nil
	}
	return strings.Split(list, ",")
}

// witness stamps the time each change to the service's keys is seen on the
// admin client (never cut off). A witness that falls behind compaction
// misses stamps, which only makes the lag check more lenient.
func (w *discWL) witness(ctx context.Context, e *env) {
	next := int64(0)
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if next > 0 {
			opts = append(opts, clientv3.WithRev(next))
		}
		for wr := range e.admin.Watch(wctx, discPrefix, opts...) {
			if wr.CompactRevision != 0 {
				next = 0
				break
			}
			if wr.Canceled || wr.Err() != nil {
				break
			}
			now := time.Now()
			for _, ev := range wr.Events {
				if r := ev.Kv.ModRevision; r >= next {
					e.hist.add(op{proc: "witness", recipe: w.name(), kind: "witness", start: now, out: ok, rev: r})
					next = r + 1
				}
			}
		}
		cancel()
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// drain stops registering and deregistering and waits until every
// watcher's view equals the registrations in etcd (and is not stale).
func (w *discWL) drain(ctx context.Context, e *env) {
	w.mu.Lock()
	w.stopOps()
	ws := slices.Clone(w.ws)
	w.mu.Unlock()
	waitGroup(&w.opsWG, scaled(10*time.Second))
	w.mu.Lock()
	live := slices.Clone(w.live)
	w.mu.Unlock()
	start := time.Now()
	var why string
	conv := pollUntil(ctx, discBound(e.ttl), func() bool {
		octx, cancel := opCtx(ctx)
		resp, err := e.admin.Get(octx, discPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			why = "read the registry: " + err.Error()
			return false
		}
		var want []string
		for _, kv := range resp.Kvs {
			want = append(want, strings.TrimPrefix(string(kv.Key), discPrefix))
		}
		slices.Sort(want)
		for _, id := range live {
			if !slices.Contains(want, id) {
				why = fmt.Sprintf("%s is registered (never deregistered) but not in etcd (registry %v)", id, want)
				return false
			}
		}
		for i, wt := range ws {
			var got []string
			for _, in := range wt.Instances() {
				got = append(got, in.ID)
			}
			if !slices.Equal(got, want) || wt.Stale() {
				why = fmt.Sprintf("%s: view %v (stale %v, rev %d), registry %v (rev %d)", w.watchers[i].name, got, wt.Stale(), wt.Revision(), want, resp.Header.Revision)
				return false
			}
		}
		return true
	})
	o := op{proc: "check", recipe: w.name(), kind: "converged", start: start, out: ok, note: why}
	if !conv {
		o.out = failed
	}
	e.hist.add(o)
}

// liveIDs returns the instance IDs live in etcd's record at rev.
func liveIDs(ls []life, rev int64) []string {
	var out []string
	for _, l := range ls {
		if l.create <= rev && (l.end == 0 || l.end > rev) {
			out = append(out, strings.TrimPrefix(l.key, discPrefix))
		}
	}
	slices.Sort(out)
	return out
}

func (w *discWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	ls := lives(c.events, discPrefix)
	bound := discBound(sessionTTL())
	registered := map[string]bool{}
	type stamp struct {
		rev int64
		at  time.Time
	}
	var seen []stamp
	stalls := map[string][]time.Time{} // proc -> ends of its stalls
	for _, o := range c.ops {
		switch o.kind {
		case "register":
			id, _, _ := strings.Cut(o.note, " ")
			registered[id] = true
		case "witness":
			seen = append(seen, stamp{o.rev, o.start})
		case "stall":
			stalls[o.proc] = append(stalls[o.proc], o.end)
		}
	}
	sort.Slice(seen, func(i, j int) bool { return seen[i].rev < seen[j].rev })
	// first[i]: the earliest time any change from seen[i] on was witnessed.
	first := make([]time.Time, len(seen))
	for i := len(seen) - 1; i >= 0; i-- {
		first[i] = seen[i].at
		if i+1 < len(seen) && first[i+1].Before(first[i]) {
			first[i] = first[i+1]
		}
	}
	// Every acknowledged registration is in the record, created at the
	// revision its Registration reported.
	for _, o := range c.ops {
		if o.kind != "register" || o.out != ok {
			continue
		}
		key := discPrefix + o.note
		if !slices.ContainsFunc(ls, func(l life) bool { return l.key == key && l.create == o.rev }) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("acknowledged registration of %s (token %d) is not in etcd's record", o.note, o.rev), []op{o}})
		}
	}
	views, behind, never := 0, 0, 0
	var maxLag time.Duration
	for _, o := range c.ops {
		if o.kind != "view" || o.rev == 0 {
			continue
		}
		views++
		got := viewIDs(o.note)
		for _, id := range got {
			if !registered[id] {
				never++
				vs = append(vs, violation{w.name(), fmt.Sprintf("%s's view at rev %d shows %s, which was never registered", o.proc, o.rev, id), []op{o}})
			}
		}
		if want := liveIDs(ls, o.rev); !slices.Equal(got, want) {
			vs = append(vs, violation{w.name(), fmt.Sprintf("%s's view at rev %d is %v: it differs from etcd's record at that revision (%v)", o.proc, o.rev, got, want), []op{o}})
		}
		// The earliest change after the view's revision, and when it
		// was witnessed: the view lags it from then on.
		i := sort.Search(len(seen), func(i int) bool { return seen[i].rev > o.rev })
		if i == len(seen) {
			continue
		}
		from := first[i]
		for _, end := range stalls[o.proc] {
			if end.After(from) && !end.After(o.start) {
				from = end
			}
		}
		lag := o.start.Sub(from)
		maxLag = max(maxLag, lag)
		if lag > bound {
			behind++
			what := fmt.Sprintf("a change at rev %d", seen[i].rev)
			for _, l := range ls {
				if l.end == seen[i].rev && slices.Contains(got, strings.TrimPrefix(l.key, discPrefix)) {
					what = fmt.Sprintf("phantom %s, deleted at rev %d", strings.TrimPrefix(l.key, discPrefix), l.end)
					break
				}
			}
			vs = append(vs, violation{w.name(), fmt.Sprintf("%s's view at rev %d is behind etcd by %v (more than %v): it misses %s", o.proc, o.rev, lag.Round(time.Millisecond), bound, what), []op{o}})
		}
	}
	// A registration whose record was deleted (its lease expired or was
	// revoked) while it was neither deregistered nor being deregistered is
	// registered again within the bound. A Register that failed promises
	// only to leave nothing behind: its record may go at any time.
	var end time.Time
	deregs := map[string][]time.Time{}
	acked := map[string]bool{}
	for _, o := range c.ops {
		switch o.kind {
		case "converged":
			end = o.start
		case "deregister":
			id, _, _ := strings.Cut(o.note, " ")
			deregs[id] = append(deregs[id], o.start)
		case "register":
			if o.out == ok {
				acked[o.note] = true
			}
		}
	}
	stampOf := func(rev int64) (time.Time, bool) {
		i := sort.Search(len(seen), func(i int) bool { return seen[i].rev >= rev })
		if i < len(seen) && seen[i].rev == rev {
			return seen[i].at, true
		}
		return time.Time{}, false
	}
	lost, back := 0, 0
	var slowest time.Duration // the longest a record lost with a lease was gone
	for _, l := range ls {
		if l.end == 0 {
			continue
		}
		gone, found := stampOf(l.end)
		if !found || end.IsZero() || gone.After(end.Add(-bound)) {
			continue
		}
		id := strings.TrimPrefix(l.key, discPrefix)
		if !acked[id] {
			continue
		}
		// The bound runs while the cluster is up: a whole-cluster outage
		// (restart-all) in the window extends it by its length.
		bound := c.e.outageIn(gone, bound)
		if slices.ContainsFunc(deregs[id], func(t time.Time) bool { return !t.After(gone.Add(bound)) }) {
			continue // deregistered, or being deregistered, by then
		}
		lost++
		next := time.Duration(-1) // until the record was created again
		for _, m := range ls {
			if m.key == l.key && m.create > l.end {
				if t, ok := stampOf(m.create); ok && (next < 0 || t.Sub(gone) < next) {
					next = t.Sub(gone)
				}
			}
		}
		if next >= 0 && next <= bound {
			back++
			slowest = max(slowest, next)
			continue
		}
		later := "never"
		if next >= 0 {
			later = "only after " + next.Round(time.Millisecond).String()
		}
		// Show what the registry's process saw around then: its
		// operations and its sessions counting themselves lost.
		proc, _, _ := strings.Cut(id, "-")
		var near []op
		for _, o := range c.ops {
			if o.proc == proc && o.start.After(gone.Add(-2*bound)) && o.start.Before(gone.Add(bound)) {
				near = append(near, o)
			}
		}
		vs = append(vs, violation{w.name(), fmt.Sprintf("%s's record was deleted at rev %d (lease lost) and not registered again within %v (%s; deleted at %s), though never deregistered",
			id, l.end, bound, later, gone.Format("15:04:05.000")), near})
	}
	for _, o := range c.ops {
		if o.kind == "converged" && o.out != ok {
			vs = append(vs, violation{w.name(), fmt.Sprintf("watchers did not converge to the registry within %v after the faults: %s", bound, o.note), []op{o}})
		}
	}
	n := countOps(c.ops, "register", ok)
	vs = append(vs, tooFew(w.name(), "registrations", n)...)
	expired := 0
	for _, l := range ls {
		if l.end > 0 {
			expired++
		}
	}
	stats := fmt.Sprintf("registrations ok=%d unknown=%d, deregistrations ok=%d unknown=%d, records created %d, deleted %d (deregistered, expired or revoked); records lost with a lease %d (registered again %d, the slowest after %v); views sampled %d, behind %d, never-registered %d, largest lag %v (bound %v); watcher stalls %d",
		n, countOps(c.ops, "register", unknown), countOps(c.ops, "deregister", ok), countOps(c.ops, "deregister", unknown),
		len(ls), expired, lost, back, slowest.Round(time.Millisecond), views, behind, never, maxLag.Round(time.Millisecond), bound, countOps(c.ops, "stall", ok))
	return stats, vs
}
