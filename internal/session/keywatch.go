package session

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A KeyWatch is a watch on one key's deletions, or a line's (with their
// previous values), that outlives the wait it was opened for: the next wait
// on the same key takes it up instead of opening another. In a line whose
// members cycle in a steady order, the keys just ahead of a member are the
// same key names every time (LineKey reuses names), so a waiter costs the
// server no watch created and cancelled per wait, and a watch taken up that
// has seen every change since before the waiter's last read needs no
// re-read. Created says its created response was read; From, when not
// zero, is a revision after which it has seen or will deliver every change.
// One kept and not taken up within keepWatchFor is cancelled, so a key that
// keeps changing after its watchers moved on fills no buffer for long. It
// ends with the session.
type KeyWatch struct {
	Key     string
	Prefix  bool // every key under Key
	Ch      clientv3.WatchChan
	Created bool
	From    int64
	// Seen is the revision of the last event a wait read from it (Saw):
	// a later wait whose last read is older would miss the events between,
	// so it is not given this watch.
	Seen   int64
	cancel context.CancelFunc
	timer  *time.Timer
}

const (
	// keepWatchFor is how long a kept watch waits to be taken up.
	keepWatchFor = time.Second
	// maxKeptWatches bounds the watches a session keeps: a semaphore
	// waiter's window of up to 15 keys and its gate, or a lock's key ahead.
	maxKeptWatches = 16
)

// WatchKey returns a watch this session kept on key's deletions (with
// prefix, those of every key under key) that has seen every change after
// revision after, or opens one without a start revision (requiring a
// leader, as every recipe's watch does: the caller learns from its created
// response whether it began after the caller's last read). The caller hands
// it back with KeepWatch.
func (s *Session) WatchKey(key string, prefix bool, after int64) *KeyWatch {
	if w := s.takeKept(key, prefix, after); w != nil {
		return w
	}
	return s.openWatch(key, prefix, 0)
}

// WatchKeyAfter returns a watch on key's deletions that delivers every one
// after revision after: a kept one that has seen every change since then,
// or a new one that starts there.
func (s *Session) WatchKeyAfter(key string, after int64) *KeyWatch {
	if w := s.takeKept(key, false, after); w != nil {
		return w
	}
	return s.openWatch(key, false, after)
}

// takeKept takes a kept watch on key (with prefix) whose From is known and
// at most after; nil if there is none.
func (s *Session) takeKept(key string, prefix bool, after int64) *KeyWatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.keptWatches {
		if w.Key != key || w.Prefix != prefix || w.From == 0 || w.From > after || w.Seen > after {
			continue
		}
		if w.timer.Stop() {
			s.keptWatches = append(s.keptWatches[:i], s.keptWatches[i+1:]...)
			return w
		}
	}
	return nil
}

// openWatch opens a watch on key's deletions (with prefix, every key's under
// it), from after+1 when after is not zero.
func (s *Session) openWatch(key string, prefix bool, after int64) *KeyWatch {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify(), clientv3.WithFilterPut(), clientv3.WithPrevKV()}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if after != 0 {
		opts = append(opts, clientv3.WithRev(after+1))
	}
	return &KeyWatch{Key: key, Prefix: prefix, Ch: s.client.Watch(ctx, key, opts...), From: after, cancel: cancel}
}

// KeepWatch keeps w for the next wait on its key, for keepWatchFor (the
// oldest kept watch makes room if the session keeps too many); with keep
// false (a watch that failed) it stops w.
func (s *Session) KeepWatch(w *KeyWatch, keep bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !keep || s.closed || s.ctx.Err() != nil {
		w.Stop()
		return
	}
	if len(s.keptWatches) >= maxKeptWatches {
		old := s.keptWatches[0]
		if old.timer.Stop() {
			old.cancel()
		}
		s.keptWatches = s.keptWatches[1:]
	}
	w.timer = time.AfterFunc(keepWatchFor, func() {
		s.mu.Lock()
		for i, k := range s.keptWatches {
			if k == w {
				s.keptWatches = append(s.keptWatches[:i], s.keptWatches[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		w.cancel()
	})
	s.keptWatches = append(s.keptWatches, w)
}

// Saw records that a wait read wr's events (see Seen).
func (w *KeyWatch) Saw(wr *clientv3.WatchResponse) {
	if n := len(wr.Events); n > 0 {
		w.Seen = max(w.Seen, wr.Events[n-1].Kv.ModRevision)
	}
}

// Stop ends the watch.
func (w *KeyWatch) Stop() { w.cancel() }

// stopKeptWatches ends the watches the session kept.
func (s *Session) stopKeptWatches() {
	s.mu.Lock()
	kept := s.keptWatches
	s.keptWatches = nil
	s.mu.Unlock()
	for _, w := range kept {
		if w.timer.Stop() {
			w.cancel()
		}
	}
}
