// Package concurrency is the core every concord recipe is built on: a
// Session (a lease and its keepalive), fencing tokens and Guards, ordered
// waiting (Ticket), held resources (Held) and a supervisor that restarts
// work after a lost session.
//
// Guarantees. A Session's Done closes before the server can expire its lease
// (the renew deadline is measured from when each keepalive was sent, less a
// safety margin), so a holder learns of a loss before another process can
// take its place, given that the holder's clock does not run slower than the
// server's by more than margin/TTL. Tokens of one resource strictly increase
// across holders; a Guard makes an etcd write land only while the resource
// is held. What is not guaranteed: mutual exclusion for work outside etcd
// when a holder pauses past its lease (no lease-based lock can give that);
// fence such work with the token.
//
// Minimum TTL. etcd grants no lease shorter than 1.5 election timeouts
// rounded up to a second (2s with default settings) and silently raises
// shorter TTLs; NewSession rejects a TTL the server would raise with
// ErrTTLBelowMinimum, and one that is not a whole number of seconds with
// ErrInvalidTTL.
//
// Waiting. A Ticket waits on only what can change its place in line (the key
// just ahead, or for a limit above one the line's deletions), on a watch
// opened without a start revision so the server serves it at once (etcd's
// own recipes open theirs at an old revision and wait up to 100 ms per event
// for the server's slow loop), and re-reads the line in one round trip: once
// the watch is created, unless nothing was written since the ticket's own
// read, and when the key just ahead goes while others were ahead of it too.
// Waits and holds share the session's watch stream. A session's line keys
// (LineKey) reuse their names once deleted: etcd keeps every deleted key
// name in its index until compaction, and every read of a line walks them.
//
// Cancellation. A Join whose request fails or is cancelled in flight leaves
// no key: its create may land after the failing call has deleted it (the
// server runs the requests of one connection concurrently, so a later
// delete can overtake it), so the session never reuses that key's name and
// watches it, deleting a late create under its lease, until the session
// ends. A session's cleaner retries deletes that failed (etcd unreachable),
// and the lease removes whatever is left when the session ends. A recipe
// whose undo needs more than a delete runs it with Session.Go, in a
// goroutine the session owns until it ends (the queue's undo of a claim).
//
// Resumable watch. WatchFrom is the one watch loop the recipes' streams use:
// it requires a leader, replaces a watch that stays silent past its stall
// timeout and does not answer a progress request, and reports compaction
// (ErrCompacted) so the caller re-reads. Follow builds on it: a snapshot of a
// prefix (or key), then every change; after a break it resumes after the
// last revision it sent, and after compaction it sends a fresh snapshot
// marked Resync. Its channel closes only when its context ends.
package concurrency
