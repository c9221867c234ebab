package console

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/watch"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// coalesce is how long a change waits for others before the changed
// recipes are read: a burst of writes costs one read per recipe.
const coalesce = 25 * time.Millisecond

// readers bounds the reads of one round that run at once.
const readers = 4

// readSpacing bounds the time the console spends reading any one recipe: a
// recipe is read again no sooner than readSpacing times its last read's
// duration after that read began (and coalesce after it ended). A recipe
// that changes all the time and costs much to read (a busy topic retaining
// 10,000 messages: 8 ms of server CPU a read, BenchmarkInspect; a queue
// with as many items) is then shown a few times a second instead of being
// read back to back, which took the server's every spare cycle. The wait
// is at most maxSpacing, so that one read slowed by a blip does not hold a
// recipe's next change back for long.
const readSpacing = 10

// maxSpacing bounds the wait readSpacing sets.
const maxSpacing = 5 * time.Second

// lastRead is when a recipe's last read began and how long it took.
type lastRead struct {
	at   time.Time
	took time.Duration
}

// due is when a recipe read as r may be read again.
func (r lastRead) due() time.Time {
	return r.at.Add(min(max(readSpacing*r.took, r.took+coalesce), maxSpacing))
}

// run is the Console's one goroutine: it follows the prefix, reads what
// changed, polls the cluster and the leases, and pushes new renderings.
func (c *Console) run(ctx context.Context) {
	defer close(c.done)
	st := watch.Follow(ctx, c.client, c.cfg.prefix, watch.Options{})
	defer func() { <-st.Done() }()

	dirty := map[recipeID]bool{}
	reads := map[recipeID]lastRead{}
	backoff := retry.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}.New()

	refresh := time.NewTimer(time.Hour)
	refresh.Stop()
	// hold: after a failed round, no read before its backoff is out.
	armed, deadline, hold := false, time.Time{}, time.Time{}
	arm := func(d time.Duration) { // to fire in d (not before hold), or sooner if it will
		at := time.Now().Add(d)
		if at.Before(hold) {
			at = hold
		}
		if armed && !at.Before(deadline) {
			return
		}
		refresh.Reset(time.Until(at))
		armed, deadline = true, at
	}
	poll := time.NewTicker(c.cfg.poll)
	defer poll.Stop()
	defer refresh.Stop()

	c.poll(ctx, dirty)
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-st.C():
			if !ok {
				return
			}
			c.follow(u, dirty)
			arm(coalesce)
		case <-refresh.C:
			armed = false
			ok, next := c.readDirty(ctx, dirty, reads)
			if !ok {
				hold = time.Now().Add(backoff.NextBackOff())
				arm(0)
				break
			}
			backoff.Reset()
			hold = time.Time{}
			if !next.IsZero() {
				arm(time.Until(next)) // recipes read too recently to read again yet
			}
		case <-poll.C:
			if c.poll(ctx, dirty) && len(dirty) > 0 {
				arm(0)
			}
		}
	}
}

// follow counts each recipe's keys from one step of the watch and marks
// the recipes it touched.
func (c *Console) follow(u watch.Update, dirty map[recipeID]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st
	if u.Snapshot {
		for id := range s.keys {
			dirty[id] = true
		}
		s.keys = map[recipeID]int{}
		for _, kv := range u.KVs {
			if id, ok := recipeOf(kv.Key); ok {
				s.keys[id]++
				dirty[id] = true
			}
		}
	}
	for _, ev := range u.Events {
		id, ok := recipeOf(ev.Kv.Key)
		if !ok {
			continue
		}
		switch {
		case ev.Type == clientv3.EventTypeDelete:
			s.keys[id]--
		case ev.IsCreate():
			s.keys[id]++
		}
		if s.keys[id] <= 0 {
			delete(s.keys, id)
		}
		dirty[id] = true
	}
	s.rev = max(s.rev, u.Revision)
	if u.Snapshot && !s.loaded && len(dirty) == 0 {
		// An empty prefix: nothing to read, the first state is in.
		s.loaded = true
	}
}

// readDirty reads every marked recipe that reads (when each was last read)
// allows now, and publishes the new state. It reports whether every read
// succeeded (failed ones stay marked) and when the first of the recipes it
// left marked, read too recently, may be read (zero if none).
func (c *Console) readDirty(ctx context.Context, dirty map[recipeID]bool, reads map[recipeID]lastRead) (ok bool, next time.Time) {
	start := time.Now()
	c.mu.RLock()
	connected := c.st.cluster.Connected || !c.st.cluster.Checked
	var gone, todo []recipeID
	deferred := 0
	for id := range dirty {
		switch {
		case c.st.keys[id] <= 0:
			gone = append(gone, id)
		case reads[id].due().After(start):
			deferred++
			if due := reads[id].due(); next.IsZero() || due.Before(next) {
				next = due
			}
		default:
			todo = append(todo, id)
		}
	}
	c.mu.RUnlock()
	if !connected && len(todo) > 0 {
		return false, next // the poll marks the console connected again, and reads then
	}
	if len(todo) == 0 && len(gone) == 0 {
		return true, next // all deferred: nothing changes on the page
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].name < todo[j].name })

	results := make([]apply, len(todo))
	errs := make([]error, len(todo))
	took := make([]lastRead, len(todo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, readers)
	for i, id := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
			defer cancel()
			began := time.Now()
			results[i], errs[i] = c.read(rctx, id)
			took[i] = lastRead{at: began, took: time.Since(began)}
		}()
	}
	wg.Wait()

	ok = true
	now := time.Now()
	c.mu.Lock()
	s := c.st
	for _, id := range gone {
		s.forget(id)
		delete(dirty, id)
		delete(reads, id)
	}
	for i, id := range todo {
		switch {
		case errs[i] == nil:
			results[i](s, now)
			delete(dirty, id)
			reads[id] = took[i]
		case errors.Is(errs[i], errNotOurs) || errors.Is(errs[i], lock.ErrInvalidName):
			s.forget(id)
			delete(dirty, id)
			delete(reads, id)
		default:
			ok = false
			c.cfg.logger.Warn("console: read failed", "kind", string(id.kind), "name", id.name, "err", errs[i])
		}
	}
	if len(dirty) == deferred {
		// Every recipe read, but for those read too recently (which
		// were read before and show what they did then).
		s.loaded = true
		s.prune()
	}
	c.mu.Unlock()
	if ok {
		c.markReady()
	}
	c.publish()
	return ok, next
}

func (c *Console) markReady() {
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
}

// prune forgets first-seen times of keys no view shows any more.
func (s *state) prune() {
	live := map[string]bool{}
	add := func(role string, es []entryView) {
		for _, e := range es {
			live[role+"\x00"+e.Key] = true
		}
	}
	for _, l := range s.locks {
		add("hold", l.Holders)
		add("wait", l.Waiters)
	}
	for _, m := range s.sems {
		add("hold", m.Holders)
		add("wait", m.Waiters)
	}
	for _, e := range s.elects {
		if e.Leader != nil {
			add("lead", []entryView{*e.Leader})
		}
		add("candidate", e.Candidates)
	}
	for _, sv := range s.services {
		for _, in := range sv.Instances {
			live["register\x00"+in.seenKey] = true
		}
	}
	for k := range s.firstSeen {
		if !live[k] {
			delete(s.firstSeen, k)
		}
	}
}
