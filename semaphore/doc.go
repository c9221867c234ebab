// Package semaphore provides distributed counting semaphores over etcd: at
// most K permits of one name held at a time, for K hosts of a fleet
// upgrading at once or a cap on expensive jobs across workers.
//
// Guarantees. A permit is granted only when etcd's own record shows fewer
// than the stored limit of keys ahead of it at one revision, so the holders
// never exceed the limit in force. Permits are granted in request order
// (FIFO). Each permit lives under its holder's session lease: a crashed
// holder's permit returns when its lease expires, and a permit whose session
// is lost closes its Done before the server can hand it to anyone else. The
// limit is stored in etcd and can be changed while in use (SetLimit):
// raising it admits waiters at once; lowering it revokes no permit, it only
// stops new grants until the holders drop below it. A Semaphore created with
// a limit other than the stored one fails with ErrLimitMismatch unless it
// was created WithFollowLimit. Each permit carries a fencing token (its
// key's create revision, unique and increasing in grant order) and a Guard
// for etcd writes that must land only while it is held. Release deletes only
// its own key; a cancelled or failed Acquire leaves no key behind. An
// Acquire whose join etcd refuses as overloaded or times out tries again
// after a randomized pause until its context ends, and a client's sessions
// send at most 8 joins at a time: 10,000 Acquires at once from 100 clients
// all got in line with no session lost (README, Scale).
//
// Not guaranteed: a limit on work outside etcd when a holder pauses past its
// lease (no lease-based permit can give that); fence such work with Token.
// A crashed holder's permit returns only after its session TTL.
//
// Costs. A waiter makes no request until its count of keys ahead drops
// below the limit; a release then costs the releaser's delete plus, for the
// one waiter it admits, one Txn that reads the stored limit and the line at
// one revision (the grant). Waiters that stay waiting make no requests,
// whatever their number. A waiter that joins with fewer than 6 limits' worth
// of keys ahead watches the line's deletions (each such waiter receives each
// deletion's event); one further back watches only the limit+1 keys just
// ahead of it, each on a watch of its own, and reads the line again, with
// the stored limit, when one of the nearest limit of them goes: that read
// grants it or moves its watches on (the farthest going costs no read), so
// a release reaches at most a few limits' worth of waiters however long
// the line, and still costs one read in all. Raising the limit wakes every
// waiter, and each re-reads the line once.
//
// Telemetry (the session's providers): a span and the wait metrics per
// Acquire; permits in use and waiters are the holders and waiters with
// recipe=semaphore; concord.semaphore.limit is the stored limit last seen.
// Per semaphore (attribute concord.name) only with
// concurrency.WithNameAttribute; without it the limit gauge is that of the
// semaphore that saw one last.
package semaphore
