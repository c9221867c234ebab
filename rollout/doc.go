// Package rollout runs concurrency-limited rollouts as a library: a Plan of
// targets (hosts) and steps, run by a fleet of Workers, with at most K
// targets in flight, canaries first and optional waves, each target's steps
// checkpointed, a failure budget, pause, resume and abort, a Coordinator
// elected to own the plan, and a status and event stream for operators.
//
// It composes concord's recipes: a semaphore (package semaphore) bounds the
// targets in flight; a lock per target (package lock) is a worker's claim;
// each completed step is saved with package checkpoint under the claim's
// and the slot's Guard; waves wait behind a barrier (package barrier) that
// the coordinator, elected with package election, opens.
//
// Guarantees. At most Plan.MaxInFlight targets are in progress at once, as
// judged from etcd's record (the semaphore's permits). A step that returned
// nil is checkpointed and never run again for that target: a worker that
// dies mid-target is replaced (within its session's TTL) and the next
// worker resumes at the step after the last saved one, never going back;
// its fencing token (Step.Token) is higher than the lost worker's, and a
// lost worker's checkpoint or outcome write fails (ErrNotHeld), so a target
// is recorded done exactly once, under a valid fence. Waves open in order,
// each once, only after every target of the previous wave is done or
// failed, and only by the coordinator in office (its writes are guarded by
// its term). When more than Plan.FailureBudget targets have failed since
// the start (or the last Resume), the rollout pauses.
//
// Pause and Abort. Pause (by an operator, or by the failure budget) stops
// new work: no worker starts a target later than one session TTL after the
// pause, and none under a claim taken after it (at once, in practice: the
// workers watch the rollout's state and re-read it after taking a claim);
// the steps in progress are not cancelled, and their targets finish.
// Resume goes on where it stopped. Abort stops everything now: every step
// in progress has its context cancelled at once, with context.Cause
// ErrAborted; no later step runs (a step that still returned nil is
// checkpointed), and the workers' and coordinators' Run return
// ErrAborted.
//
// Not guaranteed: that a step runs at most once. The step in progress when
// a worker dies was not checkpointed and runs again on the next worker;
// make steps idempotent, or fence their side effects with Step.Token (or,
// for etcd writes, Step.Guard). Abort cancels a step's context but cannot
// undo what the step did before it returned.
package rollout
