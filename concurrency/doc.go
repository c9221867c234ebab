// Package concurrency is what every concord recipe is built on and what a
// user of the recipes touches: a Session (a lease and its keepalive), fencing
// Tokens and Guards, the Held interface every held resource satisfies, Do
// (run work under a held resource), Supervise (restart work with a fresh
// session after a loss) and Stream (the channel every observer, subscription
// and watch delivers on). The plumbing under it (ordered waiting, the
// resumable watch, retries, stray clean-up) lives in the module's internal
// packages.
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
// Held resources. A lock hold, a leadership term, a semaphore permit and a
// queue claim are all a Held: Token, Done and Err (closed when lost, with
// why: ErrLeaseExpired, ErrRenewDeadline, ErrKeyDeleted, or ErrReleased
// after a release), Guard, and an idempotent Release that deletes only the
// holder's own key. Every "not held any more" error of a recipe (a stale
// Proclaim, Ack or checkpoint save) matches ErrNotHeld with errors.Is,
// besides its recipe's own sentinel.
//
// Minimum TTL. etcd grants no lease shorter than 1.5 election timeouts
// rounded up to a second (2s with default settings) and silently raises
// shorter TTLs; NewSession rejects such a TTL, one that is not a whole
// number of seconds, and a safety margin not below the TTL, with
// ErrInvalidTTL.
//
// Cancellation. Every blocking call takes a context first and, when it
// ends, returns ctx.Err() and leaves no key behind: a create whose answer
// was lost may still land later, so the session deletes it then (one
// watcher per session for all such keys), and the lease removes whatever is
// left when the session ends.
//
// Telemetry. A Session, and every recipe built on it, reports OpenTelemetry
// metrics (sessions active and lost by reason, keepalive round trip and
// renew margin; per recipe: wait to acquire by outcome, waiters, holders,
// hold time, losses by reason) and a span per blocking acquire, to the
// global providers unless WithMeterProvider and WithTracerProvider name
// others. With no SDK installed they cost no allocation. Resource names (a
// lock's, an election's...) are left off unless the session is made
// WithNameAttribute, since names can be unbounded; with it they are
// attribute concord.name on each recipe's metrics and spans. The README's
// Observability section lists every metric.
package concurrency
