// Package faults is concord's fault suite: it runs every recipe at once on a
// 3-member embedded etcd cluster, each client process behind its own
// fault-injecting proxies, injects a seeded random schedule of faults (member
// crashes and restarts, member isolation, client processes stalled past
// their lease while their network is cut or held, lease revocation, and
// compaction every second), records every operation with its outcome, and
// checks each recipe's guarantees afterwards, mostly from etcd's own record of
// the keys (a watch on the whole keyspace that compaction never outruns).
//
// TestProcessFaults runs the same workloads and checks on a 3-member cluster
// of etcd server processes started from a binary (CONCORD_ETCD_BIN), whose
// members are lost as whole processes: SIGKILL and a restart on the data
// dir, SIGSTOP past the election timeout with the sockets left open, every
// member killed at once and the cluster restarted.
//
// The package holds tests only; see RELIABILITY.md at the repository root for
// how to run it, what it checks and the figures measured.
//
// Environment:
//
//	CONCORD_FAULT_SEED=n   replay the run of seed n (printed by a failing run)
//	CONCORD_TIME_SCALE=x   multiply every timeout, TTL and fault duration by x
//	CONCORD_FAULT_RUN=d    length of each short run's fault phase (default 16s)
//	CONCORD_SOAK=d         run seed after seed for d (whole runs only) and report totals
//	CONCORD_FAULT_DUMP=1   log every recorded operation
//	CONCORD_FAULT_ALL=1    run every workload in every run (by default a run
//	                       has two of barrier, counter, multi-lock and
//	                       rollout, by the seed's parity)
//	CONCORD_ETCD_BIN=path  the etcd binary of TestProcessFaults (skipped
//	                       without it; scripts/etcd-bin.sh VERSION)
package faults
