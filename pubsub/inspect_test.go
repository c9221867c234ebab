package pubsub_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

func TestInspectRetentionAndLastMessage(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	if _, err := pubsub.Inspect(ctx, srv.Client, ""); !errors.Is(err, pubsub.ErrInvalidTopic) {
		t.Fatalf("Inspect of an empty topic name = %v, want ErrInvalidTopic", err)
	}
	st, err := pubsub.Inspect(ctx, srv.Client, "news")
	if err != nil || st.Last != nil || st.Retained != 0 || st.Revision == 0 {
		t.Fatalf("Inspect of an unused topic = %+v, %v", st, err)
	}

	ps := newPubSub(t, srv.Client, pubsub.WithKeepLast(2))
	revs := publish(t, ps, "news", "m1", "m2", "m3", "m4", "m5")
	if _, err := ps.Trim(ctx, "news"); err != nil {
		t.Fatal(err)
	}
	st, err = pubsub.Inspect(ctx, srv.Client, "news")
	if err != nil {
		t.Fatal(err)
	}
	if st.KeptUntilCompaction || st.Retained != 2 || st.Trimmed != 3 || st.Last == nil ||
		string(st.Last.Data) != "m5" || st.Last.Revision != revs[4] || st.Last.Seq != 5 || st.Last.Time.IsZero() {
		t.Fatalf("Inspect after 5 messages kept 2 = %+v (last %+v), want 2 retained, 3 trimmed, last m5 seq 5", st, st.Last)
	}

	logged := newPubSub(t, srv.Client, pubsub.WithKeepUntilCompaction())
	lrevs := publish(t, logged, "audit", "a1", "a2")
	st, err = pubsub.Inspect(ctx, srv.Client, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if !st.KeptUntilCompaction || st.Last == nil || string(st.Last.Data) != "a2" || st.Last.Seq != 2 || st.Last.Revision != lrevs[1] {
		t.Fatalf("Inspect of a topic kept until compaction = %+v (last %+v)", st, st.Last)
	}
}

// Inspect reads no message's value but the newest's: the console reads it
// each time a topic changes, and a read of every retained message cost 18
// ms of server CPU at 10,000 (BenchmarkInspect).
func TestInspectReadsOneValue(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	var ranges atomic.Int64 // reads of a range of message keys with values
	c := rangeClient(t, srv.NewClientWith, func(r *pb.RangeRequest) {
		if strings.Contains(string(r.Key), "news/.m/") && len(r.RangeEnd) > 0 && !r.KeysOnly && !r.CountOnly {
			ranges.Add(1)
		}
	})
	revs := publish(t, newPubSub(t, srv.Client, pubsub.WithKeepLast(10)), "news", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l")
	st, err := pubsub.Inspect(testCtx(t), c, "news")
	if err != nil {
		t.Fatal(err)
	}
	if st.Retained != 10 || st.Trimmed != 2 || st.Last == nil || st.Last.Revision != revs[11] || string(st.Last.Data) != "l" || st.Last.Seq != 12 {
		t.Fatalf("status %+v (last %+v)", st, st.Last)
	}
	if n := ranges.Load(); n != 0 {
		t.Fatalf("%d reads of message values in a range, want none", n)
	}
}

// Inspect's later reads are at its first read's revision: when etcd
// compacts past it in between, Inspect reads again instead of failing.
func TestInspectAfterCompactionBetweenReads(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	var compacted atomic.Bool
	c, err := srv.NewClientWith(grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*pb.TxnRequest); ok && len(r.Success) > 0 && r.Success[0].GetRequestRange().GetCountOnly() && compacted.CompareAndSwap(false, true) {
			// Between the first read and the reads at its revision.
			put, err := srv.Client.Put(ctx, "other", "x")
			if err != nil {
				return err
			}
			if _, err := srv.Client.Compact(ctx, put.Header.Revision); err != nil {
				return err
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}))
	if err != nil {
		t.Fatal(err)
	}
	revs := publish(t, newPubSub(t, srv.Client), "news", "a", "b")
	st, err := pubsub.Inspect(ctx, c, "news")
	if err != nil {
		t.Fatal(err)
	}
	if !compacted.Load() || st.Retained != 2 || st.Last == nil || st.Last.Revision != revs[1] {
		t.Fatalf("status %+v (last %+v), compacted %v", st, st.Last, compacted.Load())
	}
}
