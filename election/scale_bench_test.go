package election_test

import (
	"testing"

	"github.com/concordkit/concord/embedtest"
)

// BenchmarkCluster3Failover is BenchmarkFailover on what production runs:
// a 3-member cluster (embedded) with fsync on, every candidate's client
// connected to all members. The time from the leader's Resign to the
// standby's Campaign returning, concord's election and etcd's on the same
// cluster in the same run (waited: the standby has waited 150 ms in line;
// fresh: it has just joined), beside the floor (the cycle's four writes
// and the handover's watch event, benchFloorCycle). Reported: p50/p99 and the server's stats per
// failover, every member's requests counted (proc-cpu is the whole
// process).
//
//	go test -c -o /tmp/election.test ./election
//	/tmp/election.test -test.run '^$' -test.bench Cluster3Failover -test.benchtime 100x
func BenchmarkCluster3Failover(b *testing.B) {
	srv := embedtest.StartBenchCluster(b, 3)
	for _, impl := range []string{"concord", "etcd"} {
		for _, mode := range []string{"waited", "fresh"} {
			b.Run(impl+"/"+mode, func(b *testing.B) { benchFailover(b, srv, impl, mode == "waited") })
		}
	}
	b.Run("floor", func(b *testing.B) { benchFloorCycle(b, srv) })
}
