package semaphore

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/concordkit/concord/internal/watch"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// storedLimit is the Semaphore's view of the limit stored in etcd, fed by
// its follower and by every read or write of the limit key. Views are
// ordered by revision, so a late answer never replaces a newer view. It is
// a hint for waiting; grants are decided on a fresh read (see confirm).
type storedLimit struct {
	mu      sync.Mutex
	n       int   // the stored limit, or the last one seen while none is stored
	rev     int64 // revision of the view: mod revision, or read revision when absent
	present bool  // the key is known to exist
	raised  chan struct{}
	report  func(n int) // records each stored limit seen (the limit gauge); set before use
}

func newStoredLimit(n int) *storedLimit {
	return &storedLimit{n: n, raised: make(chan struct{})}
}

// observe records the state of the limit key at revision rev.
func (l *storedLimit) observe(n int, present bool, rev int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rev <= l.rev {
		return
	}
	l.rev, l.present = rev, present
	if !present {
		return
	}
	if n > l.n {
		close(l.raised)
		l.raised = make(chan struct{})
	}
	l.n = n
	if l.report != nil {
		l.report(n)
	}
}

// current is the limit to wait with and a channel closed when it next rises.
func (l *storedLimit) current() (int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.raised
}

// known is the stored limit, if the key is known to exist.
func (l *storedLimit) known() (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.present
}

func parseLimit(v []byte) (int, error) {
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: stored limit %q", ErrInvalidLimit, v)
	}
	return n, nil
}

// follow keeps the view of the stored limit current with one resumable
// watch, until ctx ends (Close) or the session ends.
func (sem *Semaphore) follow(ctx context.Context, cancel context.CancelFunc) {
	defer close(sem.followDone)
	st := watch.Follow(ctx, sem.s.Client(), sem.limitKey, watch.Options{})
	sessionDone := sem.s.Done()
	for {
		select {
		case u, ok := <-st.C():
			if !ok {
				<-st.Done()
				return
			}
			sem.apply(u)
		case <-sessionDone:
			// The Semaphore cannot grant anything any more: stop watching.
			cancel()
			sessionDone = nil
		}
	}
}

func (sem *Semaphore) apply(u watch.Update) {
	if u.Snapshot {
		for _, kv := range u.KVs {
			if string(kv.Key) == sem.limitKey {
				sem.observeKV(kv.Value, kv.ModRevision)
				return
			}
		}
		sem.lim.observe(0, false, u.Revision)
		return
	}
	for _, ev := range u.Events {
		if string(ev.Kv.Key) != sem.limitKey {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			sem.lim.observe(0, false, ev.Kv.ModRevision)
			continue
		}
		sem.observeKV(ev.Kv.Value, ev.Kv.ModRevision)
	}
}

func (sem *Semaphore) observeKV(v []byte, rev int64) {
	n, err := parseLimit(v)
	if err != nil {
		sem.log.Warn("concord semaphore: ignoring invalid stored limit", "name", sem.name, "err", err)
		return
	}
	sem.lim.observe(n, true, rev)
	sem.mu.Lock()
	if sem.followLimit {
		sem.want = n
	}
	sem.mu.Unlock()
}

// ensure stores this Semaphore's limit if none is stored, and returns the
// stored limit: one Txn.
func (sem *Semaphore) ensure(ctx context.Context) (int, error) {
	sem.mu.Lock()
	want := sem.want
	sem.mu.Unlock()
	resp, err := sem.s.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(sem.limitKey), "=", 0)).
		Then(clientv3.OpPut(sem.limitKey, strconv.Itoa(want))).
		Else(clientv3.OpGet(sem.limitKey)).
		Commit()
	if err != nil {
		return 0, err
	}
	if resp.Succeeded {
		sem.lim.observe(want, true, resp.Header.Revision)
		return want, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return 0, fmt.Errorf("semaphore: limit key %q vanished", sem.limitKey)
	}
	n, err := parseLimit(kvs[0].Value)
	if err != nil {
		return 0, err
	}
	sem.observeKV(kvs[0].Value, kvs[0].ModRevision)
	return n, nil
}

// checkLimit returns the limit to join with. Without WithFollowLimit it
// fails with ErrLimitMismatch when the stored limit is not this
// Semaphore's. The first call stores the limit if none is stored.
func (sem *Semaphore) checkLimit(ctx context.Context) (int, error) {
	n, ok := sem.lim.known()
	if !ok {
		// One at a time: Acquires that start together on a new
		// Semaphore wait for the first one's write instead of each
		// making its own (10,000 at once made 10,000).
		select {
		case sem.ensuring <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		n, ok = sem.lim.known()
		var err error
		if !ok {
			n, err = sem.ensure(ctx)
		}
		<-sem.ensuring
		if err != nil {
			return 0, err
		}
	}
	sem.mu.Lock()
	want, follow := sem.want, sem.followLimit
	sem.mu.Unlock()
	if !follow && n != want {
		return 0, fmt.Errorf("%w: %q is configured with %d, the stored limit is %d (use WithFollowLimit or SetLimit)",
			ErrLimitMismatch, sem.name, want, n)
	}
	return n, nil
}

// SetLimit stores n as the semaphore's limit. Raising it admits waiters at
// once; lowering it revokes no permit, it only stops new grants until the
// holders drop below n. A Semaphore without WithFollowLimit adopts n as its
// own limit.
func (sem *Semaphore) SetLimit(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("%w: got %d", ErrInvalidLimit, n)
	}
	resp, err := sem.s.Client().Put(ctx, sem.limitKey, strconv.Itoa(n))
	if err != nil {
		return fmt.Errorf("semaphore: set limit: %w", err)
	}
	sem.mu.Lock()
	sem.want = n
	sem.mu.Unlock()
	sem.lim.observe(n, true, resp.Header.Revision)
	return nil
}

// Limit reads the stored limit (storing this Semaphore's if none is).
func (sem *Semaphore) Limit(ctx context.Context) (int, error) {
	return sem.ensure(ctx)
}
