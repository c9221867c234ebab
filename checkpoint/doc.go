// Package checkpoint saves a task's progress in etcd so that whoever takes
// the task over resumes where the last holder left it.
//
// Guarantees. A save lands only while the saver still holds the task (its
// Guard: a queue claim, a lock, a leadership term or a semaphore permit), so
// a stale owner's save fails with ErrNotHeld and changes nothing. Each save
// builds on the checkpoint its Saver last loaded or saved (ErrStale
// otherwise), so progress never goes backwards. Load returns the last saved
// progress and its revision. DeleteOp removes the checkpoint in the same
// transaction as a queue Ack.
//
// Not guaranteed: that work done after the last save is kept; a new owner
// repeats it (at-least-once), so save after each unit whose repetition
// matters.
package checkpoint
