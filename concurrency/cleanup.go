package concurrency

import (
	"context"
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
