package checkpoint

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/names"
)

// Key is the etcd key of task's checkpoint.
func Key(task string) string { return task + "/.checkpoint" }

// DeleteOp removes task's checkpoint; pass it to a queue claim's Ack to
// remove the checkpoint in the same transaction that finishes the task.
func DeleteOp(task string) clientv3.Op { return clientv3.OpDelete(Key(task)) }

// Progress is a loaded or saved checkpoint.
type Progress struct {
	Data []byte
	// Revision is the etcd revision at which Data was saved; 0 when the
	// task has no checkpoint yet.
	Revision int64
}

// Load reads task's last saved progress, or ErrNotFound.
func Load(ctx context.Context, client *clientv3.Client, task string) (Progress, error) {
	if err := names.Validate(task); err != nil {
		return Progress{}, err
	}
	resp, err := client.Get(ctx, Key(task))
	if err != nil {
		return Progress{}, err
	}
	if len(resp.Kvs) == 0 {
		return Progress{}, ErrNotFound
	}
	return Progress{Data: resp.Kvs[0].Value, Revision: resp.Kvs[0].ModRevision}, nil
}

// Saver saves one task's progress while its holder holds the task. Each
// save builds on the last one this Saver loaded or saved: a save over a
// checkpoint written meanwhile by anyone else fails with ErrStale, and one
// made after the guard stopped holding fails with ErrNotHeld, so progress
// never goes backwards and a stale owner's save never lands. A Saver is safe
// for concurrent use, though saves are meant to come from one worker.
type Saver struct {
	client *clientv3.Client
	task   string
	guard  concurrency.Guard

	mu  chan struct{}
	rev int64
}

// Open loads task's progress (zero Progress if none) and returns a Saver
// whose saves are fenced by guard (a queue claim's, a lock's, a
// leadership's or a permit's Guard).
func Open(ctx context.Context, client *clientv3.Client, task string, guard concurrency.Guard) (*Saver, Progress, error) {
	p, err := Load(ctx, client, task)
	if err != nil && err != ErrNotFound {
		return nil, Progress{}, err
	}
	s := &Saver{client: client, task: task, guard: guard, mu: make(chan struct{}, 1), rev: p.Revision}
	return s, p, nil
}

// Save stores data as the task's progress, only while the guard holds and
// only over the checkpoint this Saver last saw.
func (s *Saver) Save(ctx context.Context, data []byte) (Progress, error) {
	if len(data) > names.MaxValueBytes {
		return Progress{}, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(data), names.MaxValueBytes)
	}
	select {
	case s.mu <- struct{}{}:
	case <-ctx.Done():
		return Progress{}, ctx.Err()
	}
	defer func() { <-s.mu }()
	key := Key(s.task)
	resp, err := s.guard.Txn(ctx, clientv3.Compare(clientv3.ModRevision(key), "=", s.rev)).
		Then(clientv3.OpPut(key, string(data))).
		Else(fence.Guard(s.guard).Reads()...).
		Commit()
	if err != nil {
		return Progress{}, err
	}
	if !resp.Succeeded {
		if !fence.Guard(s.guard).HeldIn(resp.Responses) {
			return Progress{}, fmt.Errorf("%w: task %s", ErrNotHeld, s.task)
		}
		return Progress{}, fmt.Errorf("%w: task %s", ErrStale, s.task)
	}
	s.rev = resp.Header.Revision
	return Progress{Data: data, Revision: s.rev}, nil
}
