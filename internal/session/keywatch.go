package session

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A KeyWatch is a watch on one key's deletions, or a line's (with their
// previous values), that outlives the wait it was opened for: the next wait
// on the same key takes it up instead of opening another. In a line whose
// members cycle in a steady order, the key just ahead of a member is the
// same key name every time (LineKey reuses names), so a waiter costs the
// server no watch created and cancelled per wait, and a line's watch taken
// up needs no re-read (it has seen every change since before the Join). A KeyWatch sees every change after its creation
// (Created says its created response was read); one kept and not taken up
// within keepWatchFor is cancelled, so a key that keeps changing after its
// watchers moved on fills no buffer for long. It ends with the session.
type KeyWatch struct {
	Key     string
	Prefix  bool // every key under Key
	Ch      clientv3.WatchChan
	Created bool
	cancel  context.CancelFunc
	timer   *time.Timer
}

const (
	// keepWatchFor is how long a kept watch waits to be taken up.
	keepWatchFor = time.Second
	// maxKeptWatches bounds the watches a session keeps.
	maxKeptWatches = 4
)

// WatchKey returns the watch this session kept on key's deletions (with
// prefix, those of every key under key), or opens one (requiring a leader,
// as every recipe's watch does). The caller either keeps it for the next
// wait (KeepWatch) or stops it.
func (s *Session) WatchKey(key string, prefix bool) *KeyWatch {
	s.mu.Lock()
	for i, w := range s.keptWatches {
		if w.Key == key && w.Prefix == prefix && w.timer.Stop() {
			s.keptWatches = append(s.keptWatches[:i], s.keptWatches[i+1:]...)
			s.mu.Unlock()
			return w
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify(), clientv3.WithFilterPut(), clientv3.WithPrevKV()}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	return &KeyWatch{Key: key, Prefix: prefix, Ch: s.client.Watch(ctx, key, opts...), cancel: cancel}
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
