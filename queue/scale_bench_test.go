package queue_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/queue"
	clientv3 "go.etcd.io/etcd/client/v3"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"
)

// scaleDepths are the backlogs BenchmarkQueueDepth measures claim+ack at.
var scaleDepths = []int{100, 10_000, 100_000}

// scaleReadyBeside is how many ready items the delayed state keeps beside
// its backlog of delayed ones.
const scaleReadyBeside = 100

// BenchmarkQueueDepth measures one consumer's claim+ack with a backlog of
// depth items waiting, to show whether a claim's cost grows with the queue
// (issue #16: throughput at 100,000 at least 80% of that at 100). Each
// iteration times one Claim and its Ack, then (untimed) enqueues one item
// so the backlog stays at depth. fsync is off (the figure is the server's
// work per claim, not the disk's). It runs against etcd as its own process
// (CONCORD_ETCD_BIN) and embedded. States, each on a fresh queue on one
// server, compacted before it is built:
//
//   - ready: depth ready items;
//   - drained: depth ready items behind depth more that consumers drained
//     since the last compaction (etcd still indexes their keys): the
//     front is where such a drain leaves it, at the last drained item;
//   - tombstones: the same, but the drained items were deleted by hand
//     (their front left at the first of them): the first claims walk them;
//   - compacted: tombstones, compacted before measuring;
//   - delayed: depth items delayed by an hour, beside 100 ready ones
//     (compare with depth=100/ready).
//
// etcd is the etcd recipes Queue's Dequeue (it deletes as it delivers: no
// ack, and a crashed consumer loses the item) on a backlog of depth.
// Reported: items/s (over the timed claims and acks only), claim+ack
// p50/p99, and the server's stats per item (the replenishing put, one
// unary request, included).
//
//	go test -c -o /tmp/queue.test ./queue
//	CONCORD_ETCD_BIN=$(scripts/etcd-bin.sh 3.7.3) /tmp/queue.test -test.run '^$' -test.bench QueueDepth -test.benchtime 300x
func BenchmarkQueueDepth(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...)
			for _, depth := range scaleDepths {
				for _, state := range []string{"ready", "drained", "tombstones", "compacted", "delayed"} {
					b.Run(fmt.Sprintf("depth=%d/%s/concord", depth, state), func(b *testing.B) {
						benchDepthConcord(b, srv, depth, state)
					})
				}
				b.Run(fmt.Sprintf("depth=%d/ready/etcd", depth), func(b *testing.B) {
					benchDepthEtcd(b, srv, depth)
				})
			}
		})
	}
}

// preloadBatch is how many items one preload transaction writes (etcd's
// default limit is 128 operations per transaction).
const preloadBatch = 100

func benchDepthConcord(b *testing.B, srv *embedtest.Server, depth int, state string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	name := fmt.Sprintf("bench-depth-%d-%s-%d", depth, state, benchRun.Add(1))
	q, err := queue.New(srv.Client, name)
	if err != nil {
		b.Fatal(err)
	}
	defer dropPrefix(b, srv, name+"/")
	compactBefore(b, srv)
	payload := []byte("scale-bench-item")
	same := func(int) []byte { return payload }
	switch state {
	case "ready":
		must(b, q.Preload(ctx, depth, preloadBatch, same, 0))
	case "drained", "tombstones", "compacted":
		must(b, q.Preload(ctx, depth, preloadBatch, same, 0))
		last, err := srv.Client.Get(ctx, q.ReadyPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
		must(b, err)
		// The first depth items go: their keys stay in etcd's index as
		// tombstones until a compaction.
		resp, err := srv.Client.Delete(ctx, q.ReadyPrefix(), clientv3.WithPrefix())
		must(b, err)
		if resp.Deleted != int64(depth) {
			b.Fatalf("deleted %d drained items, want %d", resp.Deleted, depth)
		}
		if state == "drained" {
			// Consumers' claims raise the front as they drain.
			_, err := srv.Client.Put(ctx, q.FrontKey(), strings.TrimPrefix(string(last.Kvs[0].Key), q.ReadyPrefix()))
			must(b, err)
		}
		must(b, q.Preload(ctx, depth, preloadBatch, same, 0))
		if state == "compacted" {
			compactBefore(b, srv)
		}
	case "delayed":
		must(b, q.Preload(ctx, depth, preloadBatch, same, time.Hour))
		must(b, q.Preload(ctx, scaleReadyBeside, preloadBatch, same, 0))
	}
	c, err := srv.NewClient()
	must(b, err)
	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second))
	must(b, err)
	defer s.Close(context.Background())
	qc, err := queue.New(c, name)
	must(b, err)
	consumer := qc.Consumer(s)
	measureDepth(b, srv, func() error {
		cl, err := consumer.Claim(ctx)
		if err != nil {
			return err
		}
		return cl.Ack(ctx)
	}, func() error {
		_, err := q.Enqueue(ctx, payload)
		return err
	})
}

func benchDepthEtcd(b *testing.B, srv *embedtest.Server, depth int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	name := fmt.Sprintf("bench-depth-etcd-%d-%d", depth, benchRun.Add(1))
	defer dropPrefix(b, srv, name+"/")
	compactBefore(b, srv)
	// The recipe's keys are its prefix and a unique suffix; it takes the
	// oldest (lowest create revision) first.
	n := 0
	put := func(k int) error {
		var ops []clientv3.Op
		for range k {
			n++
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/%016d", name, n), "scale-bench-item"))
		}
		_, err := srv.Client.Txn(ctx).Then(ops...).Commit()
		return err
	}
	for left := depth; left > 0; left -= preloadBatch {
		must(b, put(min(left, preloadBatch)))
	}
	c, err := srv.NewClient()
	must(b, err)
	qc := recipe.NewQueue(c, name)
	measureDepth(b, srv, func() error {
		_, err := qc.Dequeue()
		return err
	}, func() error { return put(1) })
}

// measureDepth times b.N runs of take (a claim and its ack), each followed
// by an untimed refill, and reports items/s, take's p50/p99 and the
// server's stats per item.
func measureDepth(b *testing.B, srv *embedtest.Server, take, refill func() error) {
	lat := make([]time.Duration, 0, b.N)
	var spent time.Duration
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := take(); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		spent += d
		lat = append(lat, d)
		b.StopTimer()
		if err := refill(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/spent.Seconds(), "items/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	st.Report(b, srv, b.N, "item")
}

// dropPrefix deletes everything under pfx, so a deep queue of one run
// does not stay in the server for the next.
func dropPrefix(b *testing.B, srv *embedtest.Server, pfx string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := srv.Client.Delete(ctx, pfx, clientv3.WithPrefix()); err != nil {
		b.Errorf("drop %s: %v", pfx, err)
	}
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCluster3Drain is BenchmarkDrain on what production runs: a
// 3-member cluster (embedded) with fsync on, every client connected to all
// members. b.N preloaded items drained by 1, 4 and 16 consumers: concord's
// claim+ack, etcd's recipes Queue Dequeue (which deletes as it delivers)
// and the floor (one delete per item, each consumer its own share), in the
// same run. Reported: items/s and the server's stats per item, every
// member's requests counted (proc-cpu is the whole process).
//
//	go test -c -o /tmp/queue.test ./queue
//	/tmp/queue.test -test.run '^$' -test.bench Cluster3Drain -test.benchtime 400x
func BenchmarkCluster3Drain(b *testing.B) {
	benchDrain(b, embedtest.StartBenchCluster(b, 3))
}

// BenchmarkOrphanLook measures one look for items of dead consumers (what
// a queue's consumers share once a second) after acked items were drained
// by claims and not yet compacted, to show whether its cost grows with
// them (issue #16). Each iteration is one look, with one live and one dead
// consumer session noted; the whole look, which a queue's looks make every
// 30 s between them, is left out. fsync is off.
//
// With CONCORD_ETCD_BIN set it runs against that etcd as its own process
// (server=process, reporting the server's CPU per look) before embedded.
//
//	CONCORD_ETCD_BIN=$(scripts/etcd-bin.sh 3.7.3) go test -run '^$' -bench OrphanLook -benchtime 1000x ./queue
func BenchmarkOrphanLook(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			benchOrphanLook(b, embedtest.Start(b, append(where.Opts, embedtest.NoFsync())...))
		})
	}
}

func benchOrphanLook(b *testing.B, srv *embedtest.Server) {
	for _, acked := range []int{1_000, 20_000} {
		b.Run(fmt.Sprintf("acked=%d", acked), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			name := fmt.Sprintf("bench-look-%d-%d", acked, benchRun.Add(1))
			defer dropPrefix(b, srv, name+"/")
			compactBefore(b, srv)
			q, err := queue.New(srv.Client, name)
			must(b, err)
			payload := []byte("scale-bench-item")
			must(b, q.Preload(ctx, acked+2, preloadBatch, func(int) []byte { return payload }, 0))
			open := func() *queue.Consumer {
				s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(10*time.Second))
				must(b, err)
				b.Cleanup(func() { s.Close(context.Background()) })
				qc, err := queue.New(srv.Client, name)
				must(b, err)
				return qc.Consumer(s)
			}
			cl, err := open().Claim(ctx)
			must(b, err)
			for range acked - 1 {
				if cl, err = cl.AckNext(ctx); err != nil {
					b.Fatal(err)
				}
			}
			must(b, cl.Ack(ctx))
			// A consumer that died holding an item (the first look returns
			// it and forgets the session); one that lives holds the last.
			ds, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(10*time.Second))
			must(b, err)
			dq, err := queue.New(srv.Client, name)
			must(b, err)
			_, err = dq.Consumer(ds).Claim(ctx)
			must(b, err)
			_, err = open().Claim(ctx)
			must(b, err)
			must(b, ds.Close(ctx))
			looker, err := queue.New(srv.Client, name)
			must(b, err)
			looker.SetSlowLookEvery(time.Hour)
			st0 := embedtest.BenchStats(b, srv)
			b.ResetTimer()
			for range b.N {
				if _, err := looker.Look(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, "look")
		})
	}
}
