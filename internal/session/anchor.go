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
}

var anchors = struct {
	mu sync.Mutex
	m  map[*clientv3.Client]*anchor
}{m: map[*clientv3.Client]*anchor{}}

const anchorKey = "\x00concord/anchor"

// joinAnchor counts a session of c, opening c's anchor for the first.
// clientv3's Watch blocks until the server confirms the watch, so it is
// opened from a goroutine: NewSession never waits on it.
func joinAnchor(c *clientv3.Client) {
	anchors.mu.Lock()
	defer anchors.mu.Unlock()
	a := anchors.m[c]
	if a == nil {
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
		a = &anchor{cancel: cancel, done: make(chan struct{})}
		anchors.m[c] = a
		go func() {
			defer close(a.done)
			c.Watch(ctx, anchorKey)
		}()
	}
	a.refs++
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
