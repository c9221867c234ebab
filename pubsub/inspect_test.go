package pubsub_test

import (
	"errors"
	"testing"

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
