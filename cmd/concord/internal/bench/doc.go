// Package bench is concord bench's workloads: concord's recipes run against
// any etcd cluster under a prefix of their own, each timed beside the floor
// (one put and its watch event on another connection, the least a handoff
// can cost) measured on the same cluster in the same run.
//
// Workloads (each bounded by Config.Duration; contenders are sessions of
// their own, spread over up to 16 connections):
//
//	lock       the contenders take one lock.Mutex in turn; op handoff
//	sem        the contenders take permits of one semaphore of limit
//	           max(1, contenders/4); op grant
//	queue      the contenders enqueue for a third of the duration (op
//	           enqueue), then as many consumers claim and ack until the queue
//	           is empty (op claim_ack)
//	election   the leader resigns at once, the next candidate takes office;
//	           op failover
//	discovery  Config.Instances instances registered through 4 Registries
//	           (op register, at most half the duration), one watcher cache
//	           per contender loading them again and again (op snapshot_load),
//	           then one instance's metadata updated again and again, each
//	           timed until every watcher has it (op fan_out)
//
// A handoff, grant or failover is timed from the later of its request and
// the latest release before it (with a semaphore's several permits, that
// release may not be the one that let it in: the figure can only be lower).
// Latencies are nearest-rank p50 and p99 of every operation of the phase.
//
// Guarantees: Run refuses (ErrPrefixInUse) a prefix that already holds
// keys unless Config.Force; every key it writes is under the prefix (its
// connections are confined with etcd's client/v3/namespace); when it ends,
// fails or is cancelled it closes its sessions, revokes every lease it
// granted and deletes the prefix, within 10 s. Server figures are read
// from each endpoint's /metrics (etcd serves it on its client URLs) and
// summed over the endpoints; when an endpoint does not serve it they are
// n/a (null in JSON). For an embedded etcd the CPU is its whole process's.
//
// # JSON schema, version 1
//
// A Report; fields are only added within a version:
//
//	{"version": 1,
//	 "endpoints": ["http://..."], "prefix": "concord-bench/1a2b3c4d5e6f/",
//	 "started": "RFC 3339", "duration_s": 10, "server_stats": true,
//	 "floor": MEASUREMENT,
//	 "workloads": [{"name": "lock|sem|queue|election|discovery",
//	                "contenders": 8,
//	                "limit": 2,          (sem only)
//	                "instances": 1000,   (discovery only: registered)
//	                "watchers": 8,       (discovery only)
//	                "measurements": [MEASUREMENT, ...],
//	                "verdict": "handoff p99 4.1 ms: fine for locks held longer than 41 ms"}]}
//
//	MEASUREMENT = {"op": "put_event|handoff|grant|enqueue|claim_ack|failover|register|snapshot_load|fan_out",
//	 "count": 1234, "duration_s": 10.01, "ops_per_sec": 123.3,
//	 "p50_ms": 2.1, "p99_ms": 4.1, "p50_to_floor": 1.9,
//	 "server_cpu_ms_per_op": 0.8, "unary_requests_per_op": 3.3,
//	 "watch_events_per_op": 1.0}     (the last three null without server stats)
package bench
