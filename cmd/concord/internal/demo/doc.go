// Package demo is concord's rollout demo, as `concord demo` runs it: an
// embedded etcd and a simulated fleet in this process. The workers elect a
// coordinator, which enqueues a rollout of Hosts hosts; workers claim hosts
// from the queue and roll each out in Steps checkpointed steps while holding
// one of K semaphore permits, register themselves with discovery and publish
// their progress to a pub/sub topic. Midway a worker crashes and the
// coordinator is killed (Faults). Run prints a live view and a summary, and
// returns a Report that says which invariants held.
//
// It is a package of its own so that the CLI's main package stays the CLI.
package demo
