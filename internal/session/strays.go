package session

import (
	"context"
	"reflect"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/retry"
)

// DeleteLater hands key to the session's cleaner, which deletes it (only if
// it still has create revision rev, or, with rev 0, is still under the
// session's lease) and retries with backoff until that succeeds or the
// session ends. A key that a cancelled or failed call could not delete at
// once (etcd unreachable, a member failing over) must not stay in a line
// for the rest of a long-lived session.
func (s *Session) DeleteLater(key string, rev int64) {
	s.mu.Lock()
	if s.pending == nil {
		s.pending = map[string]int64{}
	}
	s.pending[key] = rev
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// cleaner owns the deletion of keys handed to DeleteLater.
func (s *Session) cleaner() {
	defer close(s.cleanerDone)
	backoff := retry.Request.New()
	for {
		select {
		case <-s.done:
			return
		case <-s.kick:
		}
		for s.cleanPending() {
			if !retry.SleepOr(s.done, backoff.NextBackOff()) {
				return
			}
		}
		backoff.Reset()
	}
}

// cleanPending tries every pending deletion once and reports whether any
// is left.
func (s *Session) cleanPending() bool {
	s.mu.Lock()
	keys := make(map[string]int64, len(s.pending))
	for k, v := range s.pending {
		keys[k] = v
	}
	s.mu.Unlock()
	for key, rev := range keys {
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", rev)
		if rev == 0 {
			cmp = clientv3.Compare(clientv3.LeaseValue(key), "=", s.id)
		}
		if !s.deleteIf(key, cmp) {
			continue
		}
		s.mu.Lock()
		if s.pending[key] == rev {
			delete(s.pending, key)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0
}

// deleteIf deletes key if cmp holds, with a short timeout of its own, and
// frees its name once it is known gone. It reports whether etcd answered.
func (s *Session) deleteIf(key string, cmp clientv3.Cmp) bool {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	resp, err := s.client.Txn(ctx).If(cmp).Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return false
	}
	if resp.Succeeded || len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		s.FreeKey(key)
	}
	return true
}

// RemoveOwn deletes key if it is under the session's lease: for a write
// whose answer was lost (it may have landed) by a call that is failing. It
// uses a short timeout of its own (the caller's context may be what
// failed); if that fails, the session's cleaner keeps trying, and the lease
// removes the key in any case when the session ends.
func (s *Session) RemoveOwn(key string) {
	if !s.deleteIf(key, clientv3.Compare(clientv3.LeaseValue(key), "=", s.id)) {
		s.DeleteLater(key, 0)
	}
}

// RemoveStray removes key, a create under the session's lease whose answer
// was lost, for good. Deleting it once is not enough: the create may still
// be in flight, and the server runs the requests of one connection
// concurrently, so it can land after the delete and leave a key in a line
// that nobody waits on, until the session ends. So the key's name is never
// reused by this session, and the session's one stray watcher deletes the
// key if it appears under the lease later (a request applies at most once),
// until the session ends. However many keys go stray, a session runs one
// goroutine for them.
func (s *Session) RemoveStray(key string) {
	s.mu.Lock()
	closed := s.closed
	delete(s.slotOf, key) // its slot stays taken: the name is burnt
	s.mu.Unlock()
	if closed {
		s.RemoveOwn(key)
		return
	}
	// The first delete is tried at once, so a caller that ends its session
	// right after a failed call leaves nothing behind.
	ctx, cancel := context.WithTimeout(s.ctx, revokeTimeout)
	rev, err := s.deleteOwn(ctx, key)
	cancel()
	if err != nil {
		rev = 0 // the watcher deletes it first
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return // the lease takes a late create
	}
	if s.strayKeys == nil {
		s.strayKeys = map[string]int64{}
	}
	s.strayKeys[key] = rev
	start := !s.strayLoop
	if start {
		s.strayLoop = true
		s.owned.Add(1)
	}
	s.mu.Unlock()
	if start {
		go s.watchStrays()
	}
	select {
	case s.strayKick <- struct{}{}:
	default:
	}
}

// Go runs fn in a goroutine the session owns, for a recipe that must finish
// undoing a write whose answer was lost (it may still land under the lease)
// after the call that made it has failed. fn's context ends when the
// session does (its keys go with the lease then), and Close and Orphan wait
// for fn to return. Go reports false, and does not run fn, if the session
// is already closed.
func (s *Session) Go(fn func(ctx context.Context)) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.owned.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.owned.Done()
		fn(s.ctx)
	}()
	return true
}

// deleteOwn deletes key if it is under the session's lease and returns the
// revision at which it is known gone.
func (s *Session) deleteOwn(ctx context.Context, key string) (int64, error) {
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", s.id)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// The stray watcher's bounds. A create lands late only while its request
// is still in flight, so each stray key is watched for strayWatchFor after
// it went stray, by at most maxStrayWatches watches at a time; a key past
// either bound is swept instead: deleted again, with every other swept key
// in batched requests, every straySweep, until strayForget has passed (a
// create landing later than that is left to the lease). Variables, so the
// package's tests can shorten them.
var (
	strayWatchFor   = time.Minute
	maxStrayWatches = 32
	straySweep      = time.Minute
	strayForget     = 10 * time.Minute
)

// stray is one stray key: watched from after rev (0: delete it first) while
// wch is set, swept otherwise.
type stray struct {
	since  time.Time
	rev    int64
	wch    clientv3.WatchChan
	cancel context.CancelFunc
	swept  bool
}

// strays is the stray watcher's state, owned by its goroutine.
type strays struct {
	s       *Session
	keys    map[string]*stray
	watched int
}

// watchStrays is the session's one stray watcher: it deletes each stray key
// and watches it, deleting a create that lands under the lease later, until
// the session ends. One goroutine selects over the keys' watches (at most
// maxStrayWatches) and sweeps the rest.
func (s *Session) watchStrays() {
	defer s.owned.Done()
	w := &strays{s: s, keys: map[string]*stray{}}
	defer w.stopAll()
	backoff := retry.Request.New()
	sweep := time.NewTicker(straySweep)
	defer sweep.Stop()
	for s.ctx.Err() == nil {
		w.take()
		if !w.arm() {
			if !retry.SleepOr(s.done, backoff.NextBackOff()) {
				return
			}
			continue
		}
		backoff.Reset()
		w.await(sweep.C)
	}
}

func (w *strays) stopAll() {
	for _, st := range w.keys {
		w.unwatch(st)
	}
}

func (w *strays) unwatch(st *stray) {
	if st.wch != nil {
		st.cancel()
		st.wch = nil
		w.watched--
	}
}

// take moves newly handed keys in: watched while there is room, swept
// (deleted at the next arm) otherwise.
func (w *strays) take() {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	now := time.Now()
	for key, rev := range w.s.strayKeys {
		if w.keys[key] == nil {
			w.keys[key] = &stray{since: now, rev: rev}
		}
	}
	clear(w.s.strayKeys)
}

// arm deletes the keys that need it and opens a watch for each watched key
// without one; it reports false if a delete failed (retry later).
func (w *strays) arm() bool {
	ok := true
	for key, st := range w.keys {
		if st.rev == 0 {
			ctx, cancel := context.WithTimeout(w.s.ctx, revokeTimeout)
			rev, err := w.s.deleteOwn(ctx, key)
			cancel()
			if err != nil {
				ok = false
				continue
			}
			st.rev = rev
		}
		if st.wch == nil && !st.swept {
			if w.watched >= maxStrayWatches {
				st.swept = true
				continue
			}
			ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.s.ctx))
			st.wch, st.cancel = w.s.client.Watch(ctx, key, clientv3.WithRev(st.rev+1)), cancel
			w.watched++
		}
	}
	return ok
}

// await waits for one event: a new stray key, a watch response, the sweep
// tick or the session's end, and acts on it.
func (w *strays) await(sweep <-chan time.Time) {
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.s.done)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.s.strayKick)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(sweep)},
	}
	var keys []string
	for key, st := range w.keys {
		if st.wch != nil {
			keys = append(keys, key)
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.wch)})
		}
	}
	chosen, v, open := reflect.Select(cases)
	switch chosen {
	case 0, 1:
		return
	case 2:
		w.sweep()
		return
	}
	key := keys[chosen-3]
	st := w.keys[key]
	var wr clientv3.WatchResponse
	if open {
		wr = v.Interface().(clientv3.WatchResponse)
	}
	switch landed := w.s.strayLanded(st, wr, open); {
	case landed == nil: // a quiet response: keep watching
	case *landed:
		// A late create landed: delete it; a request applies at most
		// once, so nothing more can come.
		w.unwatch(st)
		delete(w.keys, key)
		w.s.RemoveOwn(key)
	default:
		// A broken or compacted watch: delete again and take a fresh look.
		w.unwatch(st)
		st.rev = 0
	}
}

// sweep moves keys watched past strayWatchFor to the swept set, deletes
// every swept key again in batched requests, forgets keys past strayForget
// and lets the rest be watched afresh (a watch silenced by a broken
// connection cannot hide a late create for longer than a sweep).
func (w *strays) sweep() {
	now := time.Now()
	var batch []clientv3.Op
	for key, st := range w.keys {
		w.unwatch(st)
		switch age := now.Sub(st.since); {
		case age > strayForget:
			delete(w.keys, key)
		case age > strayWatchFor || st.swept:
			st.swept = true
			// The name is this session's alone (lease, nonce and a burnt
			// slot), so a plain delete touches nothing else.
			batch = append(batch, clientv3.OpDelete(key))
		}
	}
	for len(batch) > 0 {
		n := min(len(batch), maxTxnOps)
		ctx, cancel := context.WithTimeout(w.s.ctx, revokeTimeout)
		_, err := w.s.client.Txn(ctx).Then(batch[:n]...).Commit()
		cancel()
		if err != nil {
			return // the next sweep tries again
		}
		batch = batch[n:]
	}
}

// maxTxnOps is etcd's default limit of operations in one transaction.
const maxTxnOps = 128

// strayLanded judges one watch response: nil if nothing happened, true if
// a create under the lease landed, false if the watch broke.
func (s *Session) strayLanded(st *stray, wr clientv3.WatchResponse, open bool) *bool {
	yes, no := true, false
	if !open || wr.Canceled || wr.Err() != nil || wr.CompactRevision != 0 {
		return &no
	}
	for _, ev := range wr.Events {
		if ev.Type == clientv3.EventTypePut && clientv3.LeaseID(ev.Kv.Lease) == s.id {
			return &yes
		}
		st.rev = ev.Kv.ModRevision
	}
	return nil
}
