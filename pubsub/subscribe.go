package pubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"go.opentelemetry.io/otel/attribute"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/stream"
	"github.com/concordkit/concord/internal/telemetry"
	"github.com/concordkit/concord/internal/watch"
)

// listPage is how many messages one read of a (re)subscription returns.
const listPage = 256

// Position is where a subscription starts: Oldest, Now, After(rev) or
// From(rev).
type Position struct {
	kind  posKind
	rev   int64
	count int64 // messages with a revision <= rev; -1: not known
}

type posKind int

const (
	posAfter posKind = iota
	posOldest
	posNow
)

var (
	// Oldest starts with the oldest message retention still keeps; for a
	// topic kept until compaction, with the newest message at the oldest
	// revision etcd keeps (the oldest one it can still read). The messages
	// trimmed or compacted before the subscription began are not a gap.
	Oldest = Position{kind: posOldest}
	// Now starts with the first message published after Subscribe returns.
	Now = Position{kind: posNow}
)

// After starts with the first message whose revision is greater than rev:
// to resume, pass the revision of the last message handled.
func After(rev int64) Position { return Position{kind: posAfter, rev: rev, count: -1} }

// From starts with the first message whose revision is rev or greater.
func From(rev int64) Position { return After(rev - 1) }

// Resume starts after last, the last event an earlier subscription
// delivered and the application handled (a message or a gap). Unlike
// After(last.Revision) it carries last.Seq, so a gap at the start of the
// new subscription is counted exactly even when etcd's history of that
// time has been compacted.
func Resume(last Event) Position {
	p := After(last.Revision)
	if last.Gap != nil {
		p = After(last.Gap.To)
	}
	if last.Seq > 0 {
		p.count = last.Seq
	}
	return p
}

// Event is one step of a subscription: a message, or (Gap non-nil) the
// messages retention deleted (or compaction removed, for a topic kept until
// compaction) before the subscriber could read them.
type Event struct {
	// Revision is the message's revision (zero for a gap).
	Revision int64
	// Data is the message.
	Data []byte
	// Time is when it was published, by the publisher's clock.
	Time time.Time
	// Gap, when non-nil, says which messages were lost here.
	Gap *Gap
	// Seq numbers the topic's messages in revision order from 1, the same
	// for every subscriber: a message's Seq is how many messages up to and
	// including it the topic has had; a gap's is its last lost message's.
	// Zero when not known (before a gap of unknown Count).
	Seq int64
}

// Gap is a run of messages deleted by retention, or for a topic kept until
// compaction compacted by etcd, before a subscriber read them. Every lost
// message has a revision within [From, To]; no message in that range is
// delivered; Count is how many there were, or -1 when the history needed
// to count them is gone (a subscription started After a revision that was
// both trimmed and compacted, or just compacted for a topic kept until
// compaction, where the range may then hold no message; Resume avoids
// that).
type Gap struct {
	From, To int64
	Count    int64
}

func (g Gap) String() string {
	return fmt.Sprintf("gap [%d, %d] (%d messages)", g.From, g.To, g.Count)
}

// Subscription is a stream of a topic's messages in revision order. Its
// channel closes only when the context given to Subscribe ends; Err then
// says why. It is safe for concurrent use; C has one reader.
type Subscription = concurrency.Stream[Event]

// Subscribe delivers topic's messages from pos, in revision order, until
// ctx ends. When its watch breaks (disconnect, lost leader, stall,
// compaction) it resumes after the last message it delivered: nothing is
// delivered twice, and a message it can no longer read (deleted by
// retention, or compacted from a topic kept until compaction) is reported
// by a Gap event, never skipped silently. It works the same whatever the
// topic's retention mode, which it reads from etcd.
func (c *Client) Subscribe(ctx context.Context, topic string, pos Position) (*Subscription, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	if pos.kind == posAfter && pos.rev < 0 {
		return nil, fmt.Errorf("%w: revision %d", ErrInvalidPosition, pos.rev)
	}
	sub := &subscriber{c: c, topic: topic, prefix: msgPrefix(topic), floorPrefix: floorPrefix(topic), logKey: logKey(topic),
		s: stream.New[Event](), count: -1}
	switch pos.kind {
	case posAfter:
		sub.rev, sub.count = pos.rev, pos.count
		if pos.rev == 0 {
			sub.count = 0
		}
	case posOldest:
		sub.oldest = true
	case posNow:
		// Settle "now" before returning, so that a message published
		// after Subscribe returns is delivered: Now is After the current
		// revision. The same read counts the messages so far, so the
		// subscription can go on from etcd's history (resumeFromHistory).
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), c.cfg.stall)
		resp, err := c.etcd.Txn(rctx).Then(countOps(topic, 0)...).Commit()
		cancel()
		if err != nil {
			return nil, err
		}
		sub.rev, sub.count = resp.Header.Revision, countOf(resp.Responses)
		if rec, err := trimRecordOf(resp.Responses[0]); err == nil {
			sub.floor = rec.floor // for its resumes
		}
	}
	go sub.run(ctx)
	return (*Subscription)(sub.s), nil
}

// subscriber is a subscription's state, owned by its goroutine.
type subscriber struct {
	c      *Client
	topic  string
	prefix string // of the message keys
	// floor is the topic's floor (keys.go) as last seen, from a trim
	// record or a marker's event: reads of the message keys start there,
	// not at the prefix, so they do not walk the keys of messages trimmed
	// since etcd's last compaction. A read that finds the floor lower
	// (lowered, or dropped by an older version's trim) reads again.
	floor       string
	floorPrefix string // of the floor's marker
	logMode     bool   // the topic is kept until compaction (a catch-up found so)
	logKey      string // the messages of a topic kept until compaction
	s           *stream.Stream[Event]

	// rev: every message with a revision <= rev has been delivered or
	// reported in a gap. count: how many messages have a revision <= rev
	// (-1 when not known).
	rev, count int64
	oldest     bool // the start position, until the first listing
	// seen is the latest revision the subscription has seen from etcd:
	// a catch-up's or resumeFromHistory's read revision, or the last event
	// of a watch response.
	// A delivered message's lag is seen minus its revision.
	seen int64
	// delivered and gaps count the events sent (for the catch-up's span).
	delivered, gaps int64
}

func (sub *subscriber) run(ctx context.Context) {
	defer func() { sub.s.Finish(ctx.Err()) }()
	backoff := retry.Watch.New()
	stall := sub.c.cfg.stall
	for compacted := false; ctx.Err() == nil; {
		var fromHistory bool
		var err error
		if !compacted {
			fromHistory, err = sub.resumeFromHistory(ctx)
		}
		if err == nil && !fromHistory {
			err = sub.tracedCatchUp(ctx)
		}
		compacted = false
		if err == nil {
			var healthy bool
			deliver := func(evs []*clientv3.Event) bool {
				sub.seen = max(sub.seen, evs[len(evs)-1].Kv.ModRevision)
				return sub.deliver(ctx, putKVs(evs))
			}
			// The whole topic, not only its message keys: a topic that
			// has no message yet may turn out kept until compaction.
			healthy, err = watch.From(ctx, sub.c.etcd, topicPrefix(sub.topic), sub.rev+1, stall, deliver,
				clientv3.WithPrefix(), clientv3.WithFilterDelete())
			if healthy {
				backoff.Reset()
			}
		}
		if ctx.Err() != nil {
			return
		}
		sub.c.cfg.logger.Debug("pubsub: resuming subscription", "topic", sub.topic, "after", sub.rev, "err", err)
		if errors.Is(err, watch.ErrCompacted) {
			// History is gone: list the retained messages, or report
			// the gap, at once.
			compacted = true
			continue
		}
		if !retry.Sleep(ctx, backoff.NextBackOff()) {
			return
		}
	}
}

// historyResume bounds how many revisions behind etcd's a subscription may
// go on from etcd's history rather than list the topic's retained
// messages; it must also be no more than twice as many revisions behind as
// the topic retains messages (counted from the last trimmed message, if
// later). For a watch that starts behind, etcd reads every revision
// since, of every key, with values, while writes wait: at most 1,000
// revisions a round, every 100 ms, reading the rest again each round (a
// subscriber 9,000 revisions behind cost 25-34 ms of server CPU); a
// listing reads each retained message of the topic (about 2 µs each), for
// each subscriber.
var historyResume int64 = 1000

// resumeFromHistory reports whether the subscription can go on with a
// watch from sub.rev+1 without listing the topic, and if so reports what
// retention deleted after sub.rev as a gap (as a listing would) and moves
// past it. One read finds out: the topic's trim record, its retained
// count, and its count at sub.rev if not known (not compacted). The watch
// starts after sub.rev or after the last trimmed message, whichever is
// later; from there every message was retained at the read and is in
// etcd's history, which the watch replays. It must start at most
// historyResume revisions, and at most twice the retained count, behind
// the read. If etcd compacts that history first the watch fails with
// ErrCompacted and the subscription lists. Without it every start and
// resume read each retained message of the topic: 17-23 ms of server CPU
// at 10,000 retained (BenchmarkResume). A failed read is returned, to
// back off.
func (sub *subscriber) resumeFromHistory(ctx context.Context) (bool, error) {
	if sub.oldest || sub.rev <= 0 || sub.logMode {
		// A topic kept until compaction: catchUpLog reads no message,
		// it checks the history the watch will replay.
		return false, nil
	}
	ops := []clientv3.Op{
		clientv3.OpGet(trimKey(sub.topic)),
		sub.msgs(clientv3.WithCountOnly()),
	}
	if sub.count < 0 {
		ops = append(ops, countOps(sub.topic, sub.rev)...)
	}
	rctx, cancel := sub.request(ctx)
	resp, err := sub.c.etcd.Txn(rctx).Then(ops...).Commit()
	cancel()
	switch {
	case errors.Is(err, rpctypes.ErrCompacted), errors.Is(err, rpctypes.ErrFutureRev):
		return false, nil // the listing counts what can be counted
	case err != nil:
		return false, err
	}
	if sub.count < 0 {
		// Kept for the listing too: it then needs no count of its own.
		sub.count = countOf(resp.Responses[2:])
	}
	rec, err := trimRecordOf(resp.Responses[0])
	if err != nil {
		return false, err
	}
	if !sub.sawFloor(rec) {
		return sub.resumeFromHistory(ctx)
	}
	head, retained := resp.Header.Revision, resp.Responses[1].GetResponseRange().Count
	from := max(sub.rev, rec.rev)
	if sub.count < 0 || sub.rev > head || head-from > min(historyResume, 2*retained) {
		return false, nil
	}
	sub.seen = max(sub.seen, head)
	return true, sub.gapTo(ctx, rec)
}

// countOps read, at revision rev (0: the current one), what countOf needs
// to count topic's messages: its trim record, a count of its message keys,
// a count of its mode record and its log key (keys only).
func countOps(topic string, rev int64) []clientv3.Op {
	at := clientv3.WithRev(rev)
	return []clientv3.Op{
		clientv3.OpGet(trimKey(topic), at),
		clientv3.OpGet(msgPrefix(topic), clientv3.WithPrefix(), clientv3.WithCountOnly(), at),
		clientv3.OpGet(modeKey(topic), clientv3.WithCountOnly(), at),
		clientv3.OpGet(logKey(topic), clientv3.WithKeysOnly(), at),
	}
}

// countOf is how many messages a topic has had, from the answers to
// countOps; -1 if its trim record cannot be read.
func countOf(answers []*pb.ResponseOp) int64 {
	if answers[2].GetResponseRange().Count > 0 {
		return version(first(answers[3]))
	}
	rec, err := trimRecordOf(answers[0])
	if err != nil {
		return -1
	}
	return rec.count + answers[1].GetResponseRange().Count
}

// trimRecordOf is the trim record in a read's answer (zero if none).
func trimRecordOf(r *pb.ResponseOp) (trimRecord, error) {
	if kv := first(r); kv != nil {
		return parseTrimRecord(kv.Value)
	}
	return trimRecord{}, nil
}

// first is the first key-value of a read's answer, nil if none.
func first(r *pb.ResponseOp) *mvccpb.KeyValue {
	if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
		return kvs[0]
	}
	return nil
}

// tracedCatchUp is catchUp in a span (concord.pubsub.CatchUp, a child of
// the context given to Subscribe) that records its outcome, the revision
// the subscription reached and the messages and gaps it delivered.
func (sub *subscriber) tracedCatchUp(ctx context.Context) error {
	cctx, span := sub.c.set.Span(ctx, "concord.pubsub.CatchUp")
	if span == nil {
		return sub.catchUp(ctx)
	}
	delivered, gaps := sub.delivered, sub.gaps
	err := sub.catchUp(cctx)
	telemetry.EndSpan(span, err, attribute.Int64("concord.revision", sub.rev),
		attribute.Int64("concord.delivered", sub.delivered-delivered), attribute.Int64("concord.gaps", sub.gaps-gaps))
	return err
}

// catchUp reads, at one revision H, the topic's trim record and its
// messages after sub.rev; it reports a gap for what retention deleted,
// delivers the rest, and leaves sub.rev = H. For a topic kept until
// compaction (a mode record at H) it is catchUpLog.
func (sub *subscriber) catchUp(ctx context.Context) error {
	kv := sub.c.etcd
	ops := []clientv3.Op{
		clientv3.OpGet(trimKey(sub.topic)),
		sub.msgs(clientv3.WithCountOnly()),
		clientv3.OpGet(modeKey(sub.topic), clientv3.WithCountOnly()),
		clientv3.OpGet(sub.logKey),
	}
	if sub.count < 0 && !sub.oldest {
		// The retained messages at or below the start revision (a count
		// only would ignore the revision filter: etcd counts before it
		// filters).
		ops[1] = sub.msgs(clientv3.WithKeysOnly(), clientv3.WithMaxModRev(sub.rev))
	}
	ops = append(ops, sub.msgs(listOpts(sub.rev, 0)...))
	rctx, cancel := sub.request(ctx)
	resp, err := kv.Txn(rctx).Then(ops...).Commit()
	cancel()
	if err != nil {
		return err
	}
	head := resp.Header.Revision
	sub.seen = max(sub.seen, head)
	// A topic's mode is fixed, unless its keys are deleted by hand and
	// it is used again the other way.
	sub.logMode = resp.Responses[2].GetResponseRange().Count > 0
	if sub.logMode {
		return sub.catchUpLog(ctx, head, first(resp.Responses[3]))
	}
	rec, err := trimRecordOf(resp.Responses[0])
	if err != nil {
		return err
	}
	if !sub.sawFloor(rec) {
		return sub.catchUp(ctx)
	}
	if err := sub.reportTrimmed(ctx, rec, resp); err != nil {
		return err
	}
	if err := sub.deliverPages(ctx, resp.Responses[4].GetResponseRange(), head); err != nil {
		return err
	}
	if sub.rev > head {
		// A start beyond the current revision: messages up to it will be
		// skipped, and nobody counted them.
		sub.count = -1
	}
	sub.rev = max(sub.rev, head)
	return nil
}

// reportTrimmed reads the catch-up's trim record and retained count: it
// fixes the subscription's start (Oldest) and count, and reports as a gap
// what retention deleted after sub.rev.
func (sub *subscriber) reportTrimmed(ctx context.Context, rec trimRecord, resp *clientv3.TxnResponse) error {
	retained := resp.Responses[1].GetResponseRange().Count
	if !sub.oldest && sub.count < 0 {
		retained = int64(len(resp.Responses[1].GetResponseRange().Kvs))
	}
	switch {
	case sub.oldest:
		sub.oldest = false
		sub.rev, sub.count = rec.rev, rec.count
	case sub.count < 0 && rec.rev <= sub.rev:
		sub.count = rec.count + retained
	}
	return sub.gapTo(ctx, rec)
}

// gapTo reports as a gap the messages retention deleted after sub.rev, as
// trim record rec says, and moves the subscription past them.
func (sub *subscriber) gapTo(ctx context.Context, rec trimRecord) error {
	if rec.rev <= sub.rev {
		return nil
	}
	if sub.count < 0 {
		sub.count = sub.countAt(ctx, sub.rev)
	}
	g := &Gap{From: sub.rev + 1, To: rec.rev, Count: -1}
	if sub.count >= 0 && rec.count > sub.count {
		g.Count = rec.count - sub.count
	}
	if !sub.s.Send(ctx, Event{Gap: g, Seq: rec.count}) {
		return ctx.Err()
	}
	sub.c.tel.Gaps.Add(ctx, 1)
	sub.gaps++
	sub.rev, sub.count = rec.rev, rec.count
	return nil
}

// deliverPages delivers the retained messages after sub.rev, page by page,
// all read at revision head.
func (sub *subscriber) deliverPages(ctx context.Context, page *pb.RangeResponse, head int64) error {
	for {
		if !sub.deliver(ctx, page.Kvs) {
			return ctx.Err()
		}
		if !page.More {
			return nil
		}
		rctx, cancel := sub.request(ctx)
		r, err := sub.c.etcd.Do(rctx, sub.msgs(listOpts(sub.rev, head)...))
		cancel()
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return watch.ErrCompacted
			}
			return err
		}
		page = (*pb.RangeResponse)(r.Get())
	}
}

// listOpts reads a page of the messages after a revision, at revision at
// (0: the current one).
func listOpts(after, at int64) []clientv3.OpOption {
	o := []clientv3.OpOption{clientv3.WithMinModRev(after + 1),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend), clientv3.WithLimit(listPage)}
	if at > 0 {
		o = append(o, clientv3.WithRev(at))
	}
	return o
}

// msgs reads the topic's message keys from sub.floor, with opts.
func (sub *subscriber) msgs(opts ...clientv3.OpOption) clientv3.Op {
	return clientv3.OpGet(sub.prefix+sub.floor,
		append(opts, clientv3.WithRange(clientv3.GetPrefixRangeEnd(sub.prefix)))...)
}

// sawFloor takes the floor of trim record rec read with the message keys
// from sub.floor. It reports false if the floor is lower: the read may
// have missed keys below sub.floor and must be made again.
func (sub *subscriber) sawFloor(rec trimRecord) bool {
	ok := rec.floor >= sub.floor
	sub.floor = rec.floor
	return ok
}

// deliver sends the messages among kvs (message keys, or versions of the
// log key) that sub has not yet delivered, and skips any other key.
func (sub *subscriber) deliver(ctx context.Context, kvs []*mvccpb.KeyValue) bool {
	for _, kv := range kvs {
		var ev Event
		key := string(kv.Key)
		if f, ok := strings.CutPrefix(key, sub.floorPrefix); ok {
			sub.floor = f // a trim moved the floor
			continue
		}
		if kv.ModRevision <= sub.rev {
			continue // delivered already
		}
		switch {
		case key == sub.logKey:
			t, data, ok := parseLogValue(kv.Value)
			if !ok {
				continue // not a message Publish wrote
			}
			// Every version of the log key is a message: its Version
			// is its Seq.
			ev = Event{Revision: kv.ModRevision, Data: data, Time: t, Seq: kv.Version}
		case strings.HasPrefix(key, sub.prefix) && kv.Version == 1:
			ev = Event{Revision: kv.ModRevision, Data: kv.Value, Time: msgTime(sub.prefix, kv.Key)}
			if sub.count >= 0 {
				ev.Seq = sub.count + 1
			}
		default:
			continue // the topic's records, or not a message Publish wrote
		}
		if !sub.s.Send(ctx, ev) {
			return false
		}
		sub.c.tel.Delivered.Add(ctx, 1)
		sub.c.tel.Lag.Record(ctx, max(sub.seen-kv.ModRevision, 0))
		sub.delivered++
		sub.rev = kv.ModRevision
		if ev.Seq > 0 {
			sub.count = ev.Seq
		}
	}
	return true
}

// putKVs are the key-values the put events among evs wrote.
func putKVs(evs []*clientv3.Event) []*mvccpb.KeyValue {
	kvs := make([]*mvccpb.KeyValue, 0, len(evs))
	for _, ev := range evs {
		if ev.Type == clientv3.EventTypePut {
			kvs = append(kvs, ev.Kv)
		}
	}
	return kvs
}

// countAt counts the messages with a revision <= rev from etcd's history
// at rev (countOps). It returns -1 if that history is compacted.
func (sub *subscriber) countAt(ctx context.Context, rev int64) int64 {
	ctx, cancel := sub.request(ctx)
	defer cancel()
	resp, err := sub.c.etcd.Txn(ctx).Then(countOps(sub.topic, rev)...).Commit()
	if err != nil {
		return -1
	}
	return countOf(resp.Responses)
}

// request is the context of one read: it requires a leader and gives up
// after the stall timeout, so a dead connection cannot hold the
// subscription.
func (sub *subscriber) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(ctx), sub.c.cfg.stall)
}
