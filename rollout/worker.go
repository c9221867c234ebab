package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/concordkit/concord/barrier"
	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/watch"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Step is one step of one target, as a StepFunc sees it.
type Step struct {
	Target Target
	// Index is the step's index in Plan.Steps, Name its name.
	Index int
	Name  string
	// Token fences the step's side effects: the target's claim token. It
	// strictly increases across the workers that take the target over; a
	// store that rejects a token lower than the highest it has seen
	// rejects a stale worker's writes.
	Token concurrency.Token
	// Guard holds while this worker holds the target and its in-flight
	// slot: etcd writes made under it land only then.
	Guard concurrency.Guard
}

// StepFunc runs one step on one target. Its context is cancelled when the
// worker loses the target (its session, claim or slot: context.Cause is the
// holder's Err), when the rollout is aborted (context.Cause is ErrAborted),
// or when its Run ends; it should then return promptly. Pausing the
// rollout does not cancel it: a paused rollout lets targets in progress
// finish. A
// nil return completes the step (it is checkpointed and never run again for
// this target); an error fails the target.
type StepFunc func(ctx context.Context, step Step) error

// Option configures a Worker or a Coordinator.
type Option interface{ apply(*config) }

type config struct {
	value   string
	logger  *slog.Logger
	session []concurrency.SessionOption
	onTerm  func(token concurrency.Token, inOffice bool)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithValue names the worker or coordinator (a host name), as shown in the
// claim and slot records.
func WithValue(v string) Option { return optionFunc(func(c *config) { c.value = v }) }

// WithLogger logs progress and trouble to lg. Default: silent.
func WithLogger(lg *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = lg }) }

// WithSessionOptions configures each session the worker or coordinator
// takes (TTL, safety margin).
func WithSessionOptions(opts ...concurrency.SessionOption) Option {
	return optionFunc(func(c *config) { c.session = opts })
}

func newConfig(opts []Option) config {
	c := config{logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o.apply(&c)
	}
	return c
}

// Worker takes targets of one rollout and runs their steps. Any number of
// workers (processes) may run one rollout; at most Plan.MaxInFlight targets
// are in progress at once among them. A Worker is safe for concurrent use,
// though one value is meant for one Run at a time.
type Worker struct {
	client *clientv3.Client
	k      keys
	fn     StepFunc
	cfg    config
}

// NewWorker returns a worker of rollout name running fn. It makes no
// request.
func NewWorker(client *clientv3.Client, name string, fn StepFunc, opts ...Option) (*Worker, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, fmt.Errorf("%w: no step function", ErrInvalidPlan)
	}
	c := newConfig(opts)
	if err := names.ValidateValue(c.value); err != nil {
		return nil, err
	}
	return &Worker{client: client, k: keysOf(name), fn: fn, cfg: c}, nil
}

// Run takes targets until the rollout is done (nil), aborted (ErrAborted)
// or ctx ends (ctx.Err()). It works under a session that it replaces, with
// backoff, when it is lost; a target it held then is taken over by the next
// worker, which resumes after its last checkpointed step. While the rollout
// is paused, Run waits.
func (w *Worker) Run(ctx context.Context) error {
	return concurrency.Supervise(ctx, w.client, w.session, w.cfg.session...)
}

func (w *Worker) session(ctx context.Context, s *concurrency.Session) error {
	v, err := read(ctx, w.client, w.k)
	if err != nil {
		return err
	}
	sem, err := semaphore.New(s, w.k.slots(), v.plan.MaxInFlight, semaphore.WithValue(w.cfg.value))
	if err != nil {
		return err
	}
	defer sem.Close(context.Background())
	pause := retry.Write.UpTo(2 * time.Second).New()
	for ctx.Err() == nil {
		progressed, err := w.once(ctx, s, sem)
		switch {
		case errors.Is(err, errFinished):
			return nil
		case errors.Is(err, ErrAborted):
			return err
		case err != nil && ctx.Err() == nil:
			w.cfg.logger.Warn("concord rollout worker", "rollout", w.k.name, "err", err)
			retry.Sleep(ctx, pause.NextBackOff())
		case progressed:
			pause.Reset()
		}
	}
	return ctx.Err()
}

// errFinished: the rollout is done.
var errFinished = errors.New("rollout: done")

// once takes and runs one target, or waits for something to change. It
// reports whether it ran a target.
func (w *Worker) once(ctx context.Context, s *concurrency.Session, sem *semaphore.Semaphore) (bool, error) {
	v, err := read(ctx, w.client, w.k)
	if err != nil {
		return false, err
	}
	switch v.state.State {
	case Done:
		return false, errFinished
	case Aborted:
		return false, ErrAborted
	case Paused:
		return false, waitChange(ctx, w.client, w.k, v.rev)
	}
	cands := v.candidates()
	if len(cands) == 0 {
		waves := v.plan.Waves()
		if v.wave+1 < len(waves) && v.unclaimedPending() {
			// Later waves wait behind the coordinator's gate; wait for
			// it, or for anything else to change (a pause, an abort).
			return false, w.waitGate(ctx, v)
		}
		return false, waitChange(ctx, w.client, w.k, v.rev)
	}
	permit, err := sem.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		_ = permit.Release(rctx)
		cancel()
	}()
	for _, t := range cands {
		m, err := lock.NewMutex(s, w.k.claim(t.ID), lock.WithValue(w.cfg.value))
		if err != nil {
			return false, err
		}
		if err := m.TryLock(ctx); err != nil {
			if errors.Is(err, lock.ErrLocked) {
				continue
			}
			return false, err
		}
		ran, err := w.runClaimed(ctx, t, m, permit)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		_ = m.Unlock(rctx)
		cancel()
		return ran, err
	}
	return false, nil // every candidate was taken meanwhile
}

// unclaimedPending reports whether a pending target of a later wave is
// left (else nothing remains to wait for behind a gate).
func (v *view) unclaimedPending() bool {
	for _, t := range v.targets {
		if t.State == statePending && t.Wave > v.wave {
			return true
		}
	}
	return false
}

// waitGate waits until the next wave's gate opens or the rollout changes
// otherwise (waitChange).
func (w *Worker) waitGate(ctx context.Context, v *view) error {
	gate, err := barrier.New(w.client, w.k.gate(v.wave+1))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	errs := make(chan error, 2)
	go func() { errs <- gate.Wait(wctx) }()
	go func() { errs <- waitChange(wctx, w.client, w.k, v.rev) }()
	err = <-errs
	cancel()
	<-errs
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// releaseTimeout bounds a release after the caller's context has ended.
const releaseTimeout = 5 * time.Second

// runClaimed runs target t, claimed by m, holding permit: it re-reads the
// rollout (the claim may have come after the target ended, or the rollout
// stopped), resumes after the last checkpointed step, checkpoints each step
// under the claim and the permit, and records the outcome.
func (w *Worker) runClaimed(ctx context.Context, t Target, m *lock.Mutex, permit *semaphore.Permit) (bool, error) {
	v, err := read(ctx, w.client, w.k)
	if err != nil {
		return false, err
	}
	if v.state.State != Running || v.targets[t.ID].State != statePending {
		return false, nil
	}
	guard := concurrency.Guard(fence.Combine(fence.Guard(m.Guard()), fence.Guard(permit.Guard())))
	saver, prog, err := checkpoint.Open(ctx, w.client, w.k.progress(t.ID), guard)
	if err != nil {
		return false, err
	}
	next := 0
	if prog.Revision != 0 {
		next = parseStep(prog.Data) + 1
	}
	tctx, stop := w.stepContext(ctx, v.rev, m, permit)
	defer stop()
	for i := next; i < len(v.plan.Steps); i++ {
		if i > next {
			st, err := read(tctx, w.client, w.k)
			if err != nil {
				return true, err
			}
			if st.state.State == Aborted {
				return true, ErrAborted
			}
		}
		err := w.fn(tctx, Step{Target: t, Index: i, Name: v.plan.Steps[i], Token: m.Token(), Guard: guard})
		if tctx.Err() != nil {
			if err == nil {
				keepAborted(ctx, tctx, saver, i)
			}
			return true, context.Cause(tctx)
		}
		if err != nil {
			return true, w.fail(ctx, t, guard, m.Token(), err)
		}
		if _, err := saver.Save(tctx, []byte(strconv.Itoa(i))); err != nil {
			if tctx.Err() != nil { // lost or aborted meanwhile
				keepAborted(ctx, tctx, saver, i)
				return true, context.Cause(tctx)
			}
			return true, err
		}
	}
	return true, w.finish(ctx, t, guard, m.Token(), v.targets[t.ID].Wave)
}

// stepContext is the steps' context: it ends when the claim or the slot is
// lost (its cause the holder's Err), or the rollout is aborted after rev
// (ErrAborted). stop ends it and waits for its goroutines.
func (w *Worker) stepContext(ctx context.Context, rev int64, m *lock.Mutex, permit *semaphore.Permit) (context.Context, func()) {
	tctx, cancel := context.WithCancelCause(ctx)
	watcherDone, abortDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(abortDone)
		w.watchAbort(tctx, rev, cancel)
	}()
	go func() {
		defer close(watcherDone)
		select {
		case <-m.Done():
			cancel(m.Err())
		case <-permit.Done():
			cancel(permit.Err())
		case <-tctx.Done():
		}
	}()
	return tctx, func() { cancel(nil); <-watcherDone; <-abortDone }
}

// keepAborted checkpoints step i, which completed, if the steps' context
// tctx ended because the rollout was aborted (the claim and the slot still
// hold; the save is fenced by them in any case).
func keepAborted(ctx, tctx context.Context, saver *checkpoint.Saver, i int) {
	if !errors.Is(context.Cause(tctx), ErrAborted) || ctx.Err() != nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	_, _ = saver.Save(sctx, []byte(strconv.Itoa(i)))
}

// watchAbort cancels the steps' context with ErrAborted as soon as the
// rollout's state is aborted after rev, and returns when ctx ends. It
// follows the state key with one watch (on the session's shared watch
// stream), and after a broken or compacted watch re-reads the state.
func (w *Worker) watchAbort(ctx context.Context, rev int64, cancel context.CancelCauseFunc) {
	pause := retry.Watch.New()
	aborted := func(raw []byte) bool {
		var st stateRecord
		return json.Unmarshal(raw, &st) == nil && st.State == Aborted
	}
	for ctx.Err() == nil {
		_, _ = watch.From(ctx, w.client, w.k.state(), rev+1, watch.DefaultStallTimeout,
			func(evs []*clientv3.Event) bool {
				for _, ev := range evs {
					rev = ev.Kv.ModRevision
					if ev.Type == clientv3.EventTypePut && aborted(ev.Kv.Value) {
						cancel(ErrAborted)
						return false
					}
				}
				return true
			})
		if ctx.Err() != nil {
			return
		}
		// The watch broke (compacted, stalled, closed): read the state
		// as it is now and follow it from there.
		resp, err := w.client.Get(ctx, w.k.state())
		switch {
		case err != nil:
			retry.Sleep(ctx, pause.NextBackOff())
		case len(resp.Kvs) > 0 && aborted(resp.Kvs[0].Value):
			cancel(ErrAborted)
			return
		default:
			rev = resp.Header.Revision
			pause.Reset()
		}
	}
}

// finish records t done and removes its checkpoint, under guard.
func (w *Worker) finish(ctx context.Context, t Target, guard concurrency.Guard, tok concurrency.Token, wave int) error {
	_, err := guard.Do(ctx,
		clientv3.OpPut(w.k.target(t.ID), mustJSON(targetRecord{State: stateDone, Wave: wave, Token: tok})),
		checkpoint.DeleteOp(w.k.progress(t.ID)))
	return err
}

// fail records t failed under guard, then pauses the rollout if more than
// the failure budget have failed.
func (w *Worker) fail(ctx context.Context, t Target, guard concurrency.Guard, tok concurrency.Token, cause error) error {
	v, err := read(ctx, w.client, w.k)
	if err != nil {
		return err
	}
	rec := targetRecord{State: stateFailed, Wave: v.targets[t.ID].Wave, Error: cause.Error(), Token: tok}
	if _, err := guard.Do(ctx, clientv3.OpPut(w.k.target(t.ID), mustJSON(rec))); err != nil {
		return err
	}
	w.cfg.logger.Warn("concord rollout target failed", "rollout", w.k.name, "target", t.ID, "err", cause)
	return enforceBudget(ctx, w.client, w.k)
}

// enforceBudget pauses a running rollout whose failures exceed its budget.
func enforceBudget(ctx context.Context, client *clientv3.Client, k keys) error {
	v, err := read(ctx, client, k)
	if err != nil {
		return err
	}
	if n := v.failed() - v.state.Forgiven; n > v.plan.FailureBudget && v.state.State == Running {
		err := Pause(ctx, client, k.name, fmt.Sprintf("failure budget: %d targets failed since the start or the last resume, budget %d", n, v.plan.FailureBudget))
		if errors.Is(err, ErrFinished) {
			return nil
		}
		return err
	}
	return nil
}
