// Package discovery registers service instances in etcd and finds them. A
// dead instance's record is removed when its lease expires, within the TTL
// (default 10s) of its last successful keepalive, and every Watcher then
// drops it; a lost lease is replaced and the instance registered again. Not
// guaranteed: freshness during an outage — a Watcher that cannot reach etcd
// (or whose cluster has no leader) keeps serving the last instances it knew,
// dead ones included, reports Stale() until it has caught up again, and
// catches up by itself when etcd returns.
//
// A Registry keeps a process's instances registered under one lease (one
// keepalive stream however many instances), supervised: after the lease is
// lost (expired, revoked, not renewed in time) it gets a new one, with
// backoff, and puts every live registration again with its latest Update.
// Between the loss and the re-registration the instance is missing from
// watchers. Deregister deletes only its own record (conditional on the
// record's create revision), never one another Registry wrote since, and is
// idempotent. An ID live under another Registry is refused with
// ErrAlreadyRegistered. A record deleted by hand while its lease is live is
// put back only when the lease is next lost. Every write is fenced by the
// record's create revision and lease, so a write delayed past a
// re-registration cannot move the record back to the lost lease. A Register
// that fails leaves no record behind, even one whose write landed unanswered.
//
// A Watcher starts from a consistent snapshot and then applies every change
// in revision order (one resumable watch); after a broken watch it resumes
// after the last revision it applied, and re-lists when that history was
// compacted, so there are no silent gaps. A periodic probe (a linearizable
// read, every WithProbeInterval) tells it whether etcd answers; one probe in
// ten, and every probe while the cache is stale or behind, also reads the
// service's newest revision and key count to tell whether the cache has
// caught up (that read ranges over the whole service on the server, so it
// is kept rare); a cache that stays behind is re-listed.
//
// The gRPC resolver (scheme "concord") gives each ClientConn a Watcher of
// its own and passes every instance's Instance (metadata, weight) as address
// attributes; draining instances are left out. Balancers: gRPC's round_robin,
// and this package's Random and WeightedRandom (see ServiceConfig).
//
// Key layout: service + "/.instances/" + instance ID; the value is a JSON
// record. Service names and instance IDs are single key segments (no "/").
// Use etcd's client/v3/namespace for multi-tenant prefixes.
//
// Telemetry (WithMeterProvider, else the global provider): a Registry
// reports its registered instances and re-registrations (and its session's
// metrics); a Watcher, by service, the instances it sees, the seconds since
// it last heard from etcd, and whether it is serving its cache through an
// outage. Register is traced (WithTracerProvider) as a span with the
// service, the outcome and the record's token.
package discovery
