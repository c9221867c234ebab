package pubsub_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// BenchmarkInspect measures pubsub.Inspect (what the console reads each
// time a topic changes, up to 40 times a second for a busy topic) on a
// topic retaining N messages of 512 bytes. floor is one read of the newest
// message's key, the least an Inspect that returns it can need.
//
//	CONCORD_ETCD_BIN=$(scripts/etcd-bin.sh 3.7.3) go test -run '^$' -bench 'Inspect/server=process' -benchtime 1000x ./pubsub
func BenchmarkInspect(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
			for _, n := range []int{100, 10000} {
				topic := fmt.Sprintf("bench/inspect/%d", benchRun.Add(1))
				_, last := fillTopic(b, srv, topic, n)
				b.Run(fmt.Sprintf("retained=%d/inspect", n), func(b *testing.B) {
					ctx := context.Background()
					st0 := embedtest.BenchStats(b, srv)
					b.ResetTimer()
					for range b.N {
						st, err := pubsub.Inspect(ctx, srv.Client, topic)
						if err != nil {
							b.Fatal(err)
						}
						if st.Last == nil || st.Last.Revision != last.rev || st.Retained != int64(n) {
							b.Fatalf("status %+v, want %d retained, the last at %d", st, n, last.rev)
						}
					}
					b.StopTimer()
					embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, "inspect")
				})
				b.Run(fmt.Sprintf("retained=%d/floor", n), func(b *testing.B) {
					ctx := context.Background()
					st0 := embedtest.BenchStats(b, srv)
					b.ResetTimer()
					for range b.N {
						if _, err := srv.Client.Get(ctx, string(last.key)); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, "inspect")
				})
			}
		})
	}
}
