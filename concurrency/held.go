package concurrency

import (
	"context"
	"time"
)

// Held is a held resource: a lock hold, a leadership term, a semaphore
// permit, a queue claim. Every one has the same shape, and every recipe's
// held type satisfies this interface (checked at compile time).
//
//   - Token is the fencing token: the create revision of the holder's key.
//     Tokens of one resource strictly increase across holders.
//   - Done closes when the resource is lost (its session is lost, its key is
//     deleted by someone else) or released; Err says why, nil while held.
//     Done closes before any other process can be granted the resource.
//   - Guard returns comparisons that hold exactly while the resource is
//     held, to make etcd writes conditional on it.
//   - Release gives the resource up, deleting only the holder's own key
//     (never a newer holder's). It is idempotent.
type Held interface {
	Token() Token
	Done() <-chan struct{}
	Err() error
	Guard() Guard
	Release(ctx context.Context) error
}

// releaseTimeout bounds Do's release when the caller's context has ended.
const releaseTimeout = 5 * time.Second

// Do runs fn while h is held: fn's context is cancelled, with h's error as
// its cause (context.Cause), when h is lost, and h is released only after
// fn returns (with a bounded context of its own if ctx has ended). Do
// returns fn's error, or else the release's.
func Do(ctx context.Context, h Held, fn func(ctx context.Context) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-h.Done():
			cancel(h.Err())
		case <-stop:
		}
	}()
	err := fn(fctx)
	close(stop)
	<-watcherDone
	cancel(nil)
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer rcancel()
	rerr := h.Release(rctx)
	if err == nil {
		err = rerr
	}
	return err
}
