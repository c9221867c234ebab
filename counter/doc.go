// Package counter provides a shared int64 over etcd (Curator's SharedCount
// and DistributedAtomicLong): Get, Add, Set, CompareAndSwap and Watch.
//
// Guarantees. The value is one key; every write is a compare-and-swap on the
// key's revision, so concurrent Adds from any number of processes lose no
// update and apply none twice, and CompareAndSwap succeeds only if the value
// was old at the revision its write lands at. A counter never written (or
// deleted) reads as 0. WithGuard makes every write conditional on a held
// resource as well (a lock's, a leadership's, a permit's Guard): a stale
// holder's write returns ErrNotHeld and changes nothing. Watch sends every
// value in the order it was set, each once, and resumes after any revision
// it sent (after a broken connection, or in a new process given the last
// Value.Revision); only when the changes to send were compacted away does it
// send the current value instead, marked Resync.
//
// Not guaranteed: a bound on Add's latency under contention (each conflict
// costs a round trip; repeated conflicts back off); an answer for a write
// whose request failed in flight (it may have landed: read the value, or
// use CompareAndSwap to make a retry safe).
//
// Costs. An Add is one transaction when this Counter value saw the last
// write (it caches the value it last saw), two otherwise. A Watch is one
// watch on one key.
package counter
