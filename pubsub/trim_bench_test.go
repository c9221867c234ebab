package pubsub_test

import (
	"context"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// BenchmarkPublishTrimmed measures Publish on a topic that keeps its last
// 100 messages (a trim every 10 publishes) after N messages were trimmed
// since etcd's last compaction: etcd keeps their keys in its index until
// a compaction, and a read of the whole topic walks them. A trim reads
// from the topic's floor (after the first trim, and in one trim of
// fullReadEvery), so it walks them rarely.
//
//	CONCORD_ETCD_BIN=$(scripts/etcd-bin.sh 3.7.3) go test -run '^$' -bench 'PublishTrimmed/server=process' -benchtime 2000x ./pubsub
func BenchmarkPublishTrimmed(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
			for _, trimmed := range []int{0, 100000} {
				b.Run(fmt.Sprintf("trimmed=%d", trimmed), func(b *testing.B) {
					ctx := context.Background()
					topic := fmt.Sprintf("bench/trimmed/%d", benchRun.Add(1))
					// Keys below every message Publish writes (stamped
					// with time 0), put and deleted 100 at a time.
					for i := 0; i < trimmed; i += 100 {
						var ops []clientv3.Op
						for j := i; j < i+100; j++ {
							ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/.m/%016x%08x", topic, 0, j), "x"))
						}
						if _, err := srv.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
							b.Fatal(err)
						}
						if _, err := srv.Client.Delete(ctx, fmt.Sprintf("%s/.m/%016x", topic, 0), clientv3.WithPrefix()); err != nil {
							b.Fatal(err)
						}
					}
					ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(100))
					if err != nil {
						b.Fatal(err)
					}
					msg := make([]byte, 128)
					st0 := embedtest.BenchStats(b, srv)
					b.ResetTimer()
					for range b.N {
						if _, err := ps.Publish(ctx, topic, msg); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, "msg")
				})
			}
		})
	}
}
