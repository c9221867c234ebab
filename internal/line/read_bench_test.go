package line_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
)

// BenchmarkLineRead measures what one read of a line costs the server at
// 10 and at 10,000 keys, for the reads a line makes and for the cheapest
// read etcd offers over the same range (issue #16: why a handoff's cost
// grows with the line):
//
//   - count: a count-only range. etcd walks every key of the range in its
//     in-memory index to count it, for any range read (a limit does not
//     stop the count), so this is the least any read covering the line
//     costs.
//   - keyorder: keys only, in key order, limit 2: the walk, and only two
//     keys taken. Useful to a line only if key names sorted in join order.
//   - gate: the read of a waiter near the head (recheckAhead): keys only,
//     create revisions below the third key's, sorted by create revision,
//     limit 2. A revision filter or a sort by anything but the key makes
//     etcd take every key of the range before filtering and sorting.
//   - join: Join's read (joinOps): keys only, sorted by create revision
//     descending, limit 3, no filter.
//
// Reported per read: the server's CPU (server=process) and requests.
// fsync is off; the keys are written before the timer starts.
//
//	CONCORD_ETCD_BIN=$(scripts/etcd-bin.sh 3.7.3) go test -run '^$' -bench 'LineRead/server=process' -benchtime 2000x ./internal/line
func BenchmarkLineRead(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
			c := srv.Client
			for _, n := range []int{10, 10_000} {
				b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
					prefix := fmt.Sprintf("bench-line-read/%d/", n)
					third := fillLine(b, c, prefix, n)
					reads := []struct {
						name string
						opts []clientv3.OpOption
					}{
						{"count", []clientv3.OpOption{clientv3.WithCountOnly()}},
						{"keyorder", []clientv3.OpOption{clientv3.WithKeysOnly(), clientv3.WithLimit(2)}},
						{"gate", []clientv3.OpOption{clientv3.WithKeysOnly(), clientv3.WithMaxCreateRev(third - 1),
							clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2)}},
						{"join", []clientv3.OpOption{clientv3.WithKeysOnly(),
							clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(3)}},
					}
					for _, r := range reads {
						b.Run(r.name, func(b *testing.B) {
							ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
							defer cancel()
							opts := append([]clientv3.OpOption{clientv3.WithPrefix()}, r.opts...)
							st0 := embedtest.BenchStats(b, srv)
							b.ResetTimer()
							for range b.N {
								resp, err := c.Get(ctx, prefix, opts...)
								if err != nil {
									b.Fatal(err)
								}
								if resp.Count != int64(n) {
									b.Fatalf("count %d, want %d", resp.Count, n)
								}
							}
							b.StopTimer()
							embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, "read")
						})
					}
				})
			}
		})
	}
}

// fillLine writes n keys under prefix, named so that key order is not join
// order (as a line's are), and returns the third key's create revision.
func fillLine(b *testing.B, c *clientv3.Client, prefix string, n int) int64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	name := func(j int) string {
		// A line key's name is its session's lease and a slot: scattered.
		return fmt.Sprintf("%s%016x", prefix, uint64(j)*0x9e3779b97f4a7c15)
	}
	var third int64
	const head = 3 // written one by one, so each has a create revision of its own
	for j := range min(head, n) {
		resp, err := c.Put(ctx, name(j), "x")
		if err != nil {
			b.Fatal(err)
		}
		third = resp.Header.Revision
	}
	const batch = 100
	for i := head; i < n; i += batch {
		var puts []clientv3.Op
		for j := i; j < min(i+batch, n); j++ {
			puts = append(puts, clientv3.OpPut(name(j), "x"))
		}
		if _, err := c.Txn(ctx).Then(puts...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return third
}
