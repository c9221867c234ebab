package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/watch"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Pause stops the rollout: workers take no new target (one in progress
// finishes its current target). It is idempotent on a paused rollout;
// ErrFinished when the rollout is done or aborted.
func Pause(ctx context.Context, client *clientv3.Client, name, reason string) error {
	return setState(ctx, client, name, func(cur stateRecord, _ int) stateRecord {
		return stateRecord{State: Paused, Reason: reason, Forgiven: cur.Forgiven}
	}, Running, Paused)
}

// Resume lets a paused rollout go on where it stopped. The failures so far
// are forgiven: the budget counts only failures after the resume. It is
// idempotent on a running rollout; ErrFinished when the rollout is done or
// aborted.
func Resume(ctx context.Context, client *clientv3.Client, name string) error {
	return setState(ctx, client, name, func(_ stateRecord, failed int) stateRecord {
		return stateRecord{State: Running, Forgiven: failed}
	}, Paused, Running)
}

// Abort ends the rollout now: workers stop taking targets, and a step in
// progress has its context cancelled at once, with context.Cause
// ErrAborted; no later step of its target runs (its progress stays
// checkpointed) and the workers' Run returns ErrAborted. It is idempotent;
// ErrFinished when the rollout is done.
func Abort(ctx context.Context, client *clientv3.Client, name, reason string) error {
	return setState(ctx, client, name, func(cur stateRecord, _ int) stateRecord {
		return stateRecord{State: Aborted, Reason: reason, Forgiven: cur.Forgiven}
	}, Running, Paused, Aborted)
}

// setState writes to(current state, failed targets) if the stored state is
// one of from and not already to's.
func setState(ctx context.Context, client *clientv3.Client, name string, to func(stateRecord, int) stateRecord, from ...string) error {
	if err := names.Validate(name); err != nil {
		return err
	}
	k := keysOf(name)
	for {
		v, err := read(ctx, client, k)
		if err != nil {
			return err
		}
		next := to(v.state, v.failed())
		if v.state.State == next.State {
			return nil
		}
		if !slices.Contains(from, v.state.State) {
			return fmt.Errorf("%w: %s is %s", ErrFinished, name, v.state.State)
		}
		tr, err := client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k.state()), "<", v.rev+1)).
			Then(clientv3.OpPut(k.state(), mustJSON(next))).Commit()
		if err != nil {
			return err
		}
		if tr.Succeeded {
			return nil
		}
		// The state changed meanwhile: judge again.
	}
}

// waitChange blocks until the rollout's control keys change after rev (its
// state, its open wave, a target's record) or a target's claim is given up,
// or ctx ends. It returns nil on a change (or when the history after
// rev was compacted: the caller reads again), ctx.Err(), or the error of a
// broken watch (the caller pauses, then reads again).
func waitChange(ctx context.Context, client *clientv3.Client, k keys, rev int64) error {
	_, err := watch.From(ctx, client, k.prefix, rev+1, watch.DefaultStallTimeout,
		func(evs []*clientv3.Event) bool {
			for _, ev := range evs {
				key := string(ev.Kv.Key)
				if strings.HasPrefix(key, k.ctl()) || (ev.Type == clientv3.EventTypeDelete && strings.HasPrefix(key, k.claims())) {
					return false
				}
			}
			return true
		}, clientv3.WithPrefix())
	if errors.Is(err, watch.ErrCompacted) {
		return nil
	}
	return err
}
