package concurrency

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// deleteLater hands key to the session's cleaner, which deletes it (only if
// it still has create revision rev, or, with rev 0, is still under the
// session's lease) and retries with backoff until that succeeds or the
// session ends. A key that a cancelled or failed call could not delete at
// once (etcd unreachable, a member failing over) must not stay in a line
// for the rest of a long-lived session.
func (s *Session) deleteLater(key string, rev int64) {
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

// cleaner owns the deletion of keys handed to deleteLater.
func (s *Session) cleaner() {
	defer close(s.cleanerDone)
	retry := newRetryBackoff(time.Second)
	for {
		select {
		case <-s.done:
			return
		case <-s.kick:
		}
		for s.cleanPending() {
			if !sleepOr(s.done, retry.NextBackOff()) {
				return
			}
		}
		retry.Reset()
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
		ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
		resp, err := s.client.Txn(ctx).If(cmp).Then(clientv3.OpDelete(key)).
			Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).Commit()
		cancel()
		if err == nil {
			if resp.Succeeded || len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
				s.freeKey(key)
			}
			s.mu.Lock()
			if s.pending[key] == rev {
				delete(s.pending, key)
			}
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0
}

// removeStray removes key, a create under the session's lease whose answer
// was lost, for good. Deleting it once is not enough: the create may still
// be in flight, and the server runs the requests of one connection
// concurrently, so it can land after the delete and leave a key in a line
// that nobody waits on, until the session ends. So the key's name is never
// reused by this session, and a watch deletes the key if it appears under
// the lease later (a request applies at most once), or until the session
// ends. The first delete is tried at once, with a short timeout of its own.
func (s *Session) removeStray(key string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.RemoveOwn(key)
		return
	}
	delete(s.slotOf, key) // its slot stays taken: the name is burnt
	s.strays.Add(1)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, revokeTimeout)
	rev, err := s.deleteOwn(ctx, key)
	cancel()
	if err != nil {
		rev = 0
	}
	go s.watchStray(key, rev)
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
	s.strays.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.strays.Done()
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

// strayStall is how long a stray key's watch may stay silent before it is
// renewed (it mostly is silent: the create rarely lands late).
const strayStall = time.Minute

// watchStray watches key from after rev (0: delete it first) and deletes it
// if a create under the session's lease lands, until the session ends.
func (s *Session) watchStray(key string, rev int64) {
	defer s.strays.Done()
	retry := newRetryBackoff(time.Second)
	landed := false
	for s.ctx.Err() == nil {
		if rev == 0 {
			ctx, cancel := context.WithTimeout(s.ctx, revokeTimeout)
			r, err := s.deleteOwn(ctx, key)
			cancel()
			if err != nil {
				if !sleepOr(s.done, retry.NextBackOff()) {
					return
				}
				continue
			}
			if landed {
				return
			}
			rev = r
		}
		healthy, err := WatchFrom(s.ctx, s.client, key, rev+1, strayStall, func(evs []*clientv3.Event) bool {
			for _, ev := range evs {
				if ev.Type == clientv3.EventTypePut && clientv3.LeaseID(ev.Kv.Lease) == s.id {
					landed = true
					return false
				}
				rev = ev.Kv.ModRevision
			}
			return true
		})
		switch {
		case landed, errors.Is(err, ErrCompacted):
			rev = 0 // delete it (or take a fresh look)
		case healthy:
			retry.Reset()
		default:
			if !sleepOr(s.done, retry.NextBackOff()) {
				return
			}
		}
	}
}
