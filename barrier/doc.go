// Package barrier provides barriers over etcd: a Barrier (a gate that a
// coordinator holds and releases while many wait) and a DoubleBarrier (n
// participants start a phase together and finish it together).
//
// Barrier guarantees. Wait returns at once when the barrier is not held,
// and otherwise when a release is seen: every waiter wakes on the release's
// watch event, within milliseconds, with no polling. Its watch is opened
// without a start revision, so the server serves it at once; etcd's own
// recipe opens its watch at a past revision, which the server serves from a
// loop that runs every 100 ms whenever anything was written in between. A
// waiter whose connection breaks resumes its watch after the last revision
// it saw, so a release made meanwhile is not missed (unless it was compacted
// away and the barrier held again). The barrier is one key without a lease:
// it stays held when its holder dies, until someone releases it. WithGuard
// makes Hold and Release land only while a held resource (a coordinator's
// leadership) holds, so a deposed coordinator cannot move the gate.
//
// DoubleBarrier guarantees. Enter returns once n participants have entered
// (a participant arriving while a round is in progress joins it); Leave
// returns once every participant of the round has left. Each participant's
// key lives under its session's lease: a participant whose session is lost
// counts as left, so the others are never stuck waiting for it (they wait at
// most its session's TTL after it stopped renewing), and they are told:
// their Leave returns a *LostError (ErrParticipantLost) naming it. A
// participant lost before the round was ready does not count towards n. A
// failed or cancelled Enter leaves no key.
//
// Costs. Enter is a transaction that joins, a watch, a read and (for the
// participant that completes the round) a transaction that marks it ready.
// Leave is a transaction that marks this participant left, a watch resumed
// from the end of Enter (so every departure meanwhile is judged; its first
// events may wait for the server's 100 ms loop), and two deletes.
//
// Not guaranteed: that a lost participant's work was not done (it may have
// finished and died before leaving); that n participants are still alive
// when Enter returns (one may be lost right after). A LostError is judged
// from etcd's history of the round; if that history was compacted while a
// participant's watch was broken, a loss in that window goes unreported
// (the participant still counts as left).
package barrier
