package session

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// An anchor is one watch a client keeps open while it has sessions, on a
// key nobody writes, so that the short watches of their waits and holds
// ride an existing gRPC watch stream instead of each opening (and closing)
// a new one. One per client, not per session: a watch per session cost the
// server a watcher each (README, Scale).
type anchor struct {
	refs   int
	cancel context.CancelFunc
	done   chan struct{}
	joins  chan struct{} // see JoinTurn
}

var anchors = struct {
	mu sync.Mutex
	m  map[*clientv3.Client]*anchor
}{m: map[*clientv3.Client]*anchor{}}

const anchorKey = "\x00concord/anchor"

// joinAnchor counts a session of c, opening c's anchor for the first, and
// returns the anchor's join turns (JoinTurn). clientv3's Watch blocks until
// the server confirms the watch, so it is opened from a goroutine:
// NewSession never waits on it.
func joinAnchor(c *clientv3.Client) chan struct{} {
	anchors.mu.Lock()
	defer anchors.mu.Unlock()
	a := anchors.m[c]
	if a == nil {
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
		a = &anchor{cancel: cancel, done: make(chan struct{}), joins: make(chan struct{}, maxJoinsInFlight)}
		anchors.m[c] = a
		go func() {
			defer close(a.done)
			c.Watch(ctx, anchorKey)
		}()
	}
	a.refs++
	return a.joins
}

// leaveAnchor uncounts a session of c; the last closes c's anchor and
// waits for its goroutine.
func leaveAnchor(c *clientv3.Client) {
	anchors.mu.Lock()
	a := anchors.m[c]
	a.refs--
	last := a.refs == 0
	if last {
		delete(anchors.m, c)
	}
	anchors.mu.Unlock()
	if last {
		a.cancel()
		<-a.done
	}
}

// maxJoinsInFlight bounds the Joins a client's sessions have in flight at
// once (JoinTurn). A Join's Txn reads the line in etcd's apply loop, which
// applies one entry at a time, and etcd renews a lease only once its apply
// has caught up with its commits (a leader checks its leadership with a
// read that waits for the apply). 10,000 semaphore Acquires sent at once
// to a line of thousands queued tens of seconds of apply: Joins timed out,
// and so did every session's keepalives, past their renew deadlines. With
// 8 per client, 100 clients queue at most 800 Joins, a few seconds at a
// line of 10,000.
const maxJoinsInFlight = 8

// JoinTurn waits until fewer than maxJoinsInFlight Joins of the session's
// client are in flight, or ctx ends (its error); the caller calls done once
// its Join's Txn is answered.
func (s *Session) JoinTurn(ctx context.Context) (done func(), err error) {
	select {
	case s.joins <- struct{}{}:
		return func() { <-s.joins }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
