package concurrency

import (
	"context"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Held is an admitted ticket: a held resource with the shape every recipe
// shares. Done closes when the resource is lost (the session is lost or the
// key is deleted by someone else) or released; Err says which. Held is safe
// for concurrent use.
type Held struct {
	t        *Ticket
	done     chan struct{}
	stop     chan struct{}
	loopDone chan struct{}
	// monCancel ends the monitor's requests at once on release, so Release
	// does not wait for a watch being created.
	monCancel context.CancelFunc

	mu       sync.Mutex
	err      error
	watching bool // the monitor has been started
	stopped  bool
	released bool
}

// Hold returns the admitted ticket as a held resource. The caller must
// Release it. The key and session are watched from the first call to Done
// or Err on: a holder that never asks costs no watch, and one that asks
// late misses nothing (the watch starts at the revision the key was last
// seen at).
func (t *Ticket) Hold() *Held {
	return &Held{t: t, done: make(chan struct{}), stop: make(chan struct{}), loopDone: make(chan struct{})}
}

// watch starts the monitor once, unless the hold was already given up.
func (h *Held) watch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watching || h.stopped {
		return
	}
	h.watching = true
	ctx, cancel := context.WithCancel(h.t.s.ctx)
	h.monCancel = cancel
	go h.monitor(ctx)
}

// stopWatch stops the monitor, if it was started, and waits for it.
func (h *Held) stopWatch() {
	close(h.stop)
	h.mu.Lock()
	watching := h.watching
	h.mu.Unlock()
	if watching {
		h.monCancel()
		<-h.loopDone
	}
}

// Key is the holder's key.
func (h *Held) Key() string { return h.t.key }

// Value is the value stored with the key.
func (h *Held) Value() string { return h.t.value }

// Token is the fencing token: the key's create revision.
func (h *Held) Token() Token { return h.t.rev }

// Guard returns comparisons that hold while the resource is held.
func (h *Held) Guard() Guard { return h.t.Guard() }

// Session is the session the resource is held under.
func (h *Held) Session() *Session { return h.t.s }

// Done is closed when the resource is lost or released.
func (h *Held) Done() <-chan struct{} {
	h.watch()
	return h.done
}

// Err says why Done closed: ErrReleased, ErrKeyDeleted or the session's
// error; nil while held.
func (h *Held) Err() error {
	h.watch()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

func (h *Held) end(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
		close(h.done)
	}
}

// Release gives the resource up: Done closes (Err is ErrReleased unless it
// was lost first) and the key is deleted if it is still this holder's (same
// create revision), never a newer holder's. It is idempotent. If the delete
// fails the error is returned, Released stays false and a later Release
// tries again; the lease removes the key in any case when the session ends.
func (h *Held) Release(ctx context.Context) error {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return nil
	}
	first := !h.stopped
	h.stopped = true
	h.mu.Unlock()
	if first {
		h.stopWatch()
	}
	// Lost (not merely given up by an earlier Release whose delete
	// failed): the key is gone or goes with the lease.
	h.mu.Lock()
	lost := h.err != nil && h.err != ErrReleased
	h.mu.Unlock()
	h.end(ErrReleased)
	if err := h.t.Delete(ctx); err != nil && !lost {
		// The session keeps trying in the background; a later Release
		// tries again at once.
		h.t.s.deleteLater(h.t.key, h.t.rev)
		return fmt.Errorf("concurrency: release %s: %w", h.t.key, err)
	}
	h.mu.Lock()
	h.released = true
	h.mu.Unlock()
	return nil
}

// Released reports whether Release (or Drop) has completed: the key is gone
// or was never this holder's to delete any more.
func (h *Held) Released() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released
}

// Drop stops watching without deleting the key, for a holder whose key was
// already removed by its own transaction (a queue ack): Done closes with
// ErrReleased. It is idempotent.
func (h *Held) Drop() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	first := !h.stopped
	h.stopped, h.released = true, true
	h.mu.Unlock()
	if first {
		h.stopWatch()
	}
	h.end(ErrReleased)
}

// monitor ends the hold when the session ends or the key is deleted. It
// watches the key from the revision at which it was last seen to exist, so
// no deletion is missed; after a failed watch it re-reads the key.
func (h *Held) monitor(mctx context.Context) {
	defer close(h.loopDone)
	defer h.monCancel()
	t := h.t
	from := t.readRev + 1
	retry := newRetryBackoff(t.s.ttl / 4)
	for {
		ctx, cancel := watchContext(mctx)
		wch := t.s.client.Watch(ctx, t.key, clientv3.WithRev(from), clientv3.WithFilterPut())
		lost, again := h.follow(wch)
		cancel()
		if lost != nil {
			h.end(lost)
			return
		}
		if !again {
			return
		}
		if !sleepOr(h.stop, retry.NextBackOff()) {
			return
		}
		rev, err := h.reread(mctx)
		if err != nil {
			h.end(err)
			return
		}
		if rev > 0 {
			from = rev + 1
		}
	}
}

// follow reads the watch until the hold is lost (an error), stopped
// (nil, false) or the watch fails (nil, true).
func (h *Held) follow(wch clientv3.WatchChan) (lost error, retry bool) {
	for {
		select {
		case <-h.stop:
			return nil, false
		case <-h.t.s.Done():
			return h.t.s.Err(), false
		case wr, ok := <-wch:
			if !ok || wr.Canceled || wr.Err() != nil {
				return nil, true
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return h.t.s.keyGone(context.Background(), h.t.key), false
				}
			}
		}
	}
}

// reread checks that the key is still this holder's; it returns the
// revision of the read, 0 if the read could not be made (retry later), or
// ErrKeyDeleted.
func (h *Held) reread(mctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(mctx, h.t.s.ttl)
	defer cancel()
	resp, err := h.t.s.client.Get(ctx, h.t.key)
	select {
	case <-h.stop:
		return 0, nil
	case <-h.t.s.Done():
		return 0, h.t.s.Err()
	default:
	}
	if err != nil {
		return 0, nil
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != h.t.rev {
		return 0, h.t.s.keyGone(mctx, h.t.key)
	}
	return resp.Header.Revision, nil
}

// HoldKey returns a held resource for a key the caller created under s's
// lease at create revision rev and saw still existing at revision seenAt (a
// queue claim, say): it has the same Done, Err, Guard and Release as a
// held ticket.
func HoldKey(s *Session, key, value string, rev, seenAt int64) *Held {
	return (&Ticket{s: s, key: key, rev: rev, value: value, readRev: seenAt}).Hold()
}
