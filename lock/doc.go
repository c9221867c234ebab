// Package lock provides distributed locks over etcd: Mutex, RWMutex, Multi
// (several locks held as one) and Do.
//
// Guarantees. At most one Mutex holder at a time as judged by etcd; holders
// are granted in request order; each hold carries a fencing token (its key's
// create revision) that strictly increases across holders, and a Guard that
// makes etcd writes conditional on still holding the lock. Done closes when
// a hold is lost: the session's lease is lost (detected before the server
// can hand the lock to the next waiter) or the key is deleted by someone
// else. Unlock deletes only its own key, never a newer holder's. A waiter
// whose session is lost stops waiting at once. A cancelled or failed Lock
// leaves no key behind. A Lock whose join etcd refuses as overloaded or
// times out tries again after a randomized pause until its context ends
// (one that landed after all is taken up), and a client's sessions send at
// most 8 joins at a time (more at once put seconds of work ahead of every
// lease renewal in etcd), so thousands locking at once all get in line. RWMutex readers share the lock, writers hold it
// alone, and a waiting writer holds back later readers.
//
// A Multi holds several Mutex locks as one: it takes them in one global
// order (sorted by name), so Multis over overlapping sets (and Mutexes)
// cannot deadlock; its hold is lost when any lock is lost, and the others
// are then released at once (Multi.Do releases them only after its function
// returns); one Guard covers every lock, and each lock keeps its own
// fencing token (TokenOf).
//
// Not guaranteed: mutual exclusion for work outside etcd when a holder
// pauses past its lease; fence that work with Token. Failover after a holder
// crashes takes the session TTL.
//
// Costs. Uncontended, Lock and Unlock are one request each. A contended
// handoff takes the releaser's delete and, when more than one key was ahead
// of the next waiter, one read by it; that waiter's watch is already open
// on the key just ahead of it. About 3.3 requests per handoff in all.
package lock
