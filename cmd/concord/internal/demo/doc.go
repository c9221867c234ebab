// Package demo is concord's rollout demo, as `concord demo` runs it: an
// embedded etcd and a simulated fleet in this process, running a rollout
// with package rollout. The demo creates a rollout.Plan of Hosts hosts
// (Canaries first, then waves of WaveSize) with Steps steps each and at most
// K in flight; each worker runs a rollout.Worker with the demo's step
// function (simulated work, then a record of the step written under the
// step's Guard) and a rollout.Coordinator candidate, registers itself with
// discovery and publishes its progress to a pub/sub topic. Midway a worker
// crashes and the coordinator is killed (Faults). Run prints a live view
// and a summary, and returns a Report that says which invariants held.
//
// The invariants are judged from outside the rollout package: from its
// event stream (rollout.Watch, one event per revision), from etcd's record
// of the coordinator election and the in-flight slots, from the step
// records, and from the fleet's own ledger.
//
// It is a package of its own so that the CLI's main package stays the CLI.
package demo
