// Package hold is the held key every recipe's held resource is built on: a
// key under a session's lease, watched for loss from the first time anyone
// asks, released by a delete conditional on its create revision.
package hold

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
	"github.com/concordkit/concord/internal/watch"
)

// Hold is a held key: a held resource with the shape every recipe shares
// (concurrency.Held). Done closes when the resource is lost (the session is
// lost or the key is deleted by someone else) or released; Err says which.
// Hold is safe for concurrent use.
type Hold struct {
	s        *session.Session
	key      string
	value    string
	rev      int64
	seenAt   int64 // a revision at which the key was seen to exist
	scope    telemetry.Scope
	since    time.Time
	settling atomic.Bool // the holder is deleting the key itself; see Settling
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

// New returns a held resource for key, created under s's lease at create
// revision rev and seen still existing at revision seenAt. The caller must
// Release it (or Drop it). The key and session are watched from the first
// call to Done or Err on: a holder that never asks costs no watch, and one
// that asks late misses nothing (the watch starts at seenAt). The hold
// counts in the session's metrics as one of sc's holders until it ends.
func New(s *session.Session, sc telemetry.Scope, key, value string, rev, seenAt int64) *Hold {
	s.Telemetry().HoldStarted(sc)
	return &Hold{s: s, key: key, value: value, rev: rev, seenAt: seenAt, scope: sc, since: time.Now(),
		done: make(chan struct{}), stop: make(chan struct{}), loopDone: make(chan struct{})}
}

// watch starts the monitor once, unless the hold was already given up.
func (h *Hold) watch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watching || h.stopped {
		return
	}
	h.watching = true
	ctx, cancel := context.WithCancel(h.s.Ctx())
	h.monCancel = cancel
	go h.monitor(ctx)
}

// stopWatch stops the monitor, if it was started, and waits for it.
func (h *Hold) stopWatch() {
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
func (h *Hold) Key() string { return h.key }

// Value is the value stored with the key.
func (h *Hold) Value() string { return h.value }

// Token is the fencing token: the key's create revision.
func (h *Hold) Token() concurrency.Token { return concurrency.Token(h.rev) }

// Guard returns comparisons that hold while the resource is held.
func (h *Hold) Guard() concurrency.Guard {
	return concurrency.Guard(fence.New(h.s.Client(), h.key, h.rev))
}

// Done is closed when the resource is lost or released.
func (h *Hold) Done() <-chan struct{} {
	h.watch()
	return h.done
}

// Err says why Done closed: errs.Released, ErrKeyDeleted or the session's
// error; nil while held.
func (h *Hold) Err() error {
	h.watch()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

func (h *Hold) end(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
		// Counted before Done closes: whoever sees Done sees the count.
		h.record(err)
		close(h.done)
	}
}

// record counts the hold's end in the session's metrics. A hold released
// after its session was lost (nobody was watching) counts as lost.
func (h *Hold) record(err error) {
	why, lost := h.s.LossReason()
	switch {
	case errors.Is(err, errs.KeyDeleted) && h.settling.Load():
		why, lost = 0, false // the holder's own transaction deleted it
	case errors.Is(err, errs.KeyDeleted):
		why, lost = telemetry.Deleted, true
	case err != errs.Released && !lost:
		why, lost = telemetry.Expired, true // the session's error, not yet classified
	}
	h.s.Telemetry().HoldEnded(h.scope, time.Since(h.since), lost, why)
}

// Release gives the resource up: Done closes (Err is errs.Released unless it
// was lost first) and the key is deleted if it is still this holder's (same
// create revision), never a newer holder's. It is idempotent. If the delete
// fails the error is returned, Released stays false and a later Release
// tries again; the lease removes the key in any case when the session ends.
func (h *Hold) Release(ctx context.Context) error {
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
	lost := h.err != nil && h.err != errs.Released
	h.mu.Unlock()
	h.end(errs.Released)
	if err := DeleteOwn(ctx, h.s, h.key, h.rev); err != nil && !lost {
		// The session keeps trying in the background; a later Release
		// tries again at once.
		h.s.DeleteLater(h.key, h.rev)
		return fmt.Errorf("concurrency: release %s: %w", h.key, err)
	}
	h.mu.Lock()
	h.released = true
	h.mu.Unlock()
	return nil
}

// Released reports whether Release (or Drop) has completed: the key is gone
// or was never this holder's to delete any more.
func (h *Hold) Released() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released
}

// Settling marks (on) or unmarks the key as being deleted by the holder's
// own transaction (a queue ack), so its deletion, if the watch sees it
// before Drop, is not counted as a loss in the metrics.
func (h *Hold) Settling(on bool) { h.settling.Store(on) }

// Drop stops watching without deleting the key, for a holder whose key was
// already removed by its own transaction (a queue ack): Done closes with
// errs.Released. It is idempotent.
func (h *Hold) Drop() {
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
	h.end(errs.Released)
}

// monitor ends the hold when the session ends or the key is deleted. It
// watches the key from the revision at which it was last seen to exist, so
// no deletion is missed; after a failed watch it re-reads the key.
func (h *Hold) monitor(mctx context.Context) {
	defer close(h.loopDone)
	defer h.monCancel()
	from := h.seenAt + 1
	backoff := retry.Request.UpTo(h.s.TTL() / 4).New()
	for {
		ctx, cancel := watch.Context(mctx)
		wch := h.s.Client().Watch(ctx, h.key, clientv3.WithRev(from), clientv3.WithFilterPut())
		lost, again := h.follow(wch)
		cancel()
		if lost != nil {
			h.end(lost)
			return
		}
		if !again {
			return
		}
		if !retry.SleepOr(h.stop, backoff.NextBackOff()) {
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
func (h *Hold) follow(wch clientv3.WatchChan) (lost error, retry bool) {
	for {
		select {
		case <-h.stop:
			return nil, false
		case <-h.s.Done():
			return h.s.Err(), false
		case wr, ok := <-wch:
			if !ok || wr.Canceled || wr.Err() != nil {
				return nil, true
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return h.s.KeyGone(context.Background(), h.key), false
				}
			}
		}
	}
}

// reread checks that the key is still this holder's; it returns the
// revision of the read, 0 if the read could not be made (retry later), or
// ErrKeyDeleted.
func (h *Hold) reread(mctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(mctx, h.s.TTL())
	defer cancel()
	resp, err := h.s.Client().Get(ctx, h.key)
	select {
	case <-h.stop:
		return 0, nil
	case <-h.s.Done():
		return 0, h.s.Err()
	default:
	}
	if err != nil {
		return 0, nil
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != h.rev {
		return 0, h.s.KeyGone(mctx, h.key)
	}
	return resp.Header.Revision, nil
}

// DeleteOwn deletes key if it still has create revision rev (a newer key of
// the same name is never touched) and frees its name once it is known gone.
// It is idempotent.
func DeleteOwn(ctx context.Context, s *session.Session, key string, rev int64) error {
	resp, err := s.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded || len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		s.FreeKey(key) // gone: its name may be used again
	}
	return nil
}
