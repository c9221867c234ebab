package faults

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/pubsub"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	psTopic    = "ps" // a key per message, KeepLast(psKeep)
	psLogTopic = "pl" // KeepUntilCompaction: the history of one key
	psKeep     = 10
)

var psTopics = []string{psTopic, psLogTopic}

// psStream is one subscriber process's subscription to one topic.
type psStream struct {
	p     *proc
	topic string
	last  atomic.Int64 // every message up to last delivered or in a gap
	n     atomic.Int64 // events delivered
}

// psWL: one publisher publishes numbered messages to two topics, one kept
// by retention (KeepLast(psKeep), so a subscriber that falls behind gets
// gaps) and one kept until compaction (compacted every second); subscriber
// processes subscribe to both from the start (After(0)), and resubscribe
// now and then with Resume(last event). Each subscriber's stream per topic
// must be in revision order without duplicates, deliver only messages
// etcd's record holds (with their data and Seq), and report in a Gap
// (with the right Count and Seq) every message it does not deliver.
type psWL struct {
	pub     *proc
	streams []*psStream

	mu      sync.Mutex
	stopPub context.CancelFunc
	pubDone chan struct{}
}

func (w *psWL) name() string { return "pubsub" }

func (w *psWL) setup(e *env) {
	w.pub = e.newProc(w.name(), "pspub")
	w.pub.stallable = false
	for i := range 2 {
		p := e.newProc(w.name(), fmt.Sprintf("pssub%d", i))
		for _, t := range psTopics {
			w.streams = append(w.streams, &psStream{p: p, topic: t})
		}
	}
}

// progress is the fewest events any stream has delivered.
func (w *psWL) progress() int64 {
	low := int64(-1)
	for _, s := range w.streams {
		if n := s.n.Load(); low < 0 || n < low {
			low = n
		}
	}
	return low
}

func (w *psWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	pctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	w.stopPub, w.pubDone = cancel, make(chan struct{})
	done := w.pubDone
	w.mu.Unlock()
	wg.Go(func() { defer close(done); w.publish(pctx, e) })
	for _, s := range w.streams {
		wg.Go(func() { w.subscribe(ctx, e, s) })
	}
}

func (w *psWL) publish(ctx context.Context, e *env) {
	p := w.pub
	keep, err := pubsub.New(p.client, pubsub.WithKeepLast(psKeep))
	if err != nil {
		e.t.Errorf("pubsub: %v", err)
		return
	}
	log, err := pubsub.New(p.client, pubsub.WithKeepUntilCompaction())
	if err != nil {
		e.t.Errorf("pubsub: %v", err)
		return
	}
	for n := 0; n < 1000000 && ctx.Err() == nil; n++ {
		topic, c := psTopic, keep
		if n%2 == 1 {
			topic, c = psLogTopic, log
		}
		msg := fmt.Sprintf("%s-%06d", topic, n)
		start := time.Now()
		octx, cancel := opCtx(ctx)
		rev, err := c.Publish(octx, topic, []byte(msg))
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "publish", start: start, out: ok, rev: rev, note: topic + " " + msg}
		switch {
		case errors.Is(err, pubsub.ErrRetentionMode):
			o.out, o.note = failed, o.note+" "+err.Error()
		case err != nil:
			o.out, o.note = unknown, o.note+" "+err.Error()
		}
		e.hist.add(o)
		sleepCtx(ctx, 25*time.Millisecond)
	}
}

// subscribe reads one topic for one subscriber process, from the start,
// resubscribing with Resume(last event) every 200 events. A stall parks one
// of the process's readers and cuts the process's network: the other
// reader's subscription must resume by itself; the parked one resubscribes
// with Resume(last event) after the stall, when retention or compaction
// has usually removed what it missed (a Gap).
func (w *psWL) subscribe(ctx context.Context, e *env, s *psStream) {
	p := s.p
	c, err := pubsub.New(p.client, pubsub.WithStallTimeout(scaled(3*time.Second)))
	if err != nil {
		e.t.Errorf("pubsub: %v", err)
		return
	}
	p.holding.Store(true) // its place in the topics
	pos := pubsub.After(0)
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		sctx, cancel := context.WithCancel(ctx)
		start := time.Now()
		sub, err := c.Subscribe(sctx, s.topic, pos)
		if err != nil {
			cancel()
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		e.hist.add(op{proc: p.name, recipe: w.name(), kind: "subscribe", start: start, out: ok, rev: s.last.Load(), note: s.topic})
		for k := 0; k < 200; k++ {
			var ev pubsub.Event
			var open bool
			select {
			case ev, open = <-sub.C():
			case <-ctx.Done():
			}
			if !open {
				break
			}
			start := time.Now()
			o := op{proc: p.name, recipe: w.name(), start: start, out: ok, token: ev.Seq}
			if g := ev.Gap; g != nil {
				o.kind, o.rev = "gap", g.From
				o.note = fmt.Sprintf("%s %d %d %d", s.topic, g.From, g.To, g.Count)
				s.last.Store(g.To)
			} else {
				o.kind, o.rev = "msg", ev.Revision
				o.note = s.topic + " " + string(ev.Data)
				s.last.Store(ev.Revision)
			}
			e.hist.add(o)
			pos = pubsub.Resume(ev)
			s.n.Add(1)
			if p.park(ctx) {
				break // resubscribe after the last event handled, as a restarted process would
			}
		}
		cancel()
		for range sub.C() {
		}
	}
}

// drain stops the publisher and waits until every stream has reached its
// topic's newest message.
func (w *psWL) drain(ctx context.Context, e *env) {
	w.mu.Lock()
	w.stopPub()
	done := w.pubDone
	w.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
	want := map[string]int64{}
	for _, t := range psTopics {
		octx, cancel := opCtx(ctx)
		var resp *clientv3.GetResponse
		var err error
		if t == psLogTopic {
			resp, err = e.admin.Get(octx, t+"/.log")
		} else {
			resp, err = e.admin.Get(octx, t+"/.m/", clientv3.WithPrefix(), clientv3.WithKeysOnly(),
				clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		}
		cancel()
		if err == nil && len(resp.Kvs) > 0 {
			want[t] = resp.Kvs[0].ModRevision
		}
	}
	start := time.Now()
	pollUntil(ctx, scaled(drainTimeout), func() bool {
		for _, s := range w.streams {
			if s.last.Load() < want[s.topic] {
				return false
			}
		}
		return true
	})
	for _, s := range w.streams {
		o := op{proc: s.p.name, recipe: w.name(), kind: "caughtup", start: start, out: ok, rev: want[s.topic],
			note: fmt.Sprintf("%s at %d, newest message %d", s.topic, s.last.Load(), want[s.topic])}
		if s.last.Load() < want[s.topic] {
			o.out = failed
		}
		e.hist.add(o)
	}
}

// psMsg is one message as etcd's record holds it.
type psMsg struct {
	rev, seq int64
	data     string
	deleted  bool // by retention
}

// psRecord lists a topic's messages from etcd's record, in revision order,
// with their Seq: for a topic with a key per message, the creations of
// those keys; for a topic kept until compaction, the puts of its log key
// (the record begins before the topic's first message).
func psRecord(events []kvEvent, topic string) []psMsg {
	var out []psMsg
	if topic == psLogTopic {
		for _, e := range puts(events, topic+"/.log") {
			if len(e.value) >= 8 {
				out = append(out, psMsg{rev: e.rev, seq: int64(len(out) + 1), data: e.value[8:]})
			}
		}
		return out
	}
	for _, l := range lives(events, topic+"/.m/") {
		out = append(out, psMsg{rev: l.create, deleted: l.end > 0})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rev < out[j].rev })
	vals := map[int64]string{}
	for _, e := range putsUnder(events, topic+"/.m/") {
		if e.create == e.rev {
			vals[e.rev] = e.value
		}
	}
	for i := range out {
		out[i].seq, out[i].data = int64(i+1), vals[out[i].rev]
	}
	return out
}

func (w *psWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	recs := map[string][]psMsg{}
	for _, t := range psTopics {
		recs[t] = psRecord(c.events, t)
	}
	at := func(topic string, rev int64) (psMsg, bool) {
		ms := recs[topic]
		i := sort.Search(len(ms), func(i int) bool { return ms[i].rev >= rev })
		if i < len(ms) && ms[i].rev == rev {
			return ms[i], true
		}
		return psMsg{}, false
	}
	// seqAt is how many of topic's messages have a revision <= rev.
	seqAt := func(topic string, rev int64) int64 {
		ms := recs[topic]
		return int64(sort.Search(len(ms), func(i int) bool { return ms[i].rev > rev }))
	}
	// Every acknowledged publish is in the record at its revision.
	for _, o := range c.ops {
		if o.kind != "publish" || o.out != ok {
			continue
		}
		topic, data, _ := strings.Cut(o.note, " ")
		if m, found := at(topic, o.rev); !found || m.data != data {
			vs = append(vs, violation{w.name(), fmt.Sprintf("acknowledged publish of %q to %s at rev %d is not in etcd's record", data, topic, o.rev), []op{o}})
		}
	}
	type key struct{ proc, topic string }
	type state struct {
		pos          int64 // every record message up to pos is passed
		next         int   // index of the next record message not yet passed
		msgs, gaps   int
		lost, counts int64 // messages in gaps; gaps of unknown count
		bad          int
	}
	streams := map[key]*state{}
	var order []key
	for _, o := range c.ops {
		if o.kind != "msg" && o.kind != "gap" {
			continue
		}
		f := strings.Fields(o.note)
		if len(f) < 2 {
			continue
		}
		k := key{o.proc, f[0]}
		st := streams[k]
		if st == nil {
			st = &state{}
			streams[k] = st
			order = append(order, k)
		}
		ms := recs[k.topic]
		bad := func(format string, args ...any) {
			st.bad++
			if st.bad <= 5 {
				vs = append(vs, violation{w.name(), fmt.Sprintf("%s on %s: ", k.proc, k.topic) + fmt.Sprintf(format, args...), []op{o}})
			}
		}
		// skipTo passes the record's messages below rev: none of them
		// may be left undelivered and out of every gap.
		skipTo := func(rev int64) {
			for st.next < len(ms) && ms[st.next].rev < rev {
				if ms[st.next].rev > st.pos {
					bad("message at rev %d (seq %d, %q) skipped silently: neither delivered nor in a gap", ms[st.next].rev, ms[st.next].seq, ms[st.next].data)
				}
				st.next++
			}
		}
		if o.kind == "msg" {
			st.msgs++
			if o.rev <= st.pos {
				bad("message at rev %d delivered after rev %d: out of order or twice", o.rev, st.pos)
				continue
			}
			skipTo(o.rev)
			m, found := at(k.topic, o.rev)
			switch {
			case !found:
				bad("delivered a message at rev %d that is not in etcd's record", o.rev)
			case m.data != f[1]:
				bad("delivered %q at rev %d, etcd's record has %q", f[1], o.rev, m.data)
			case o.token != 0 && o.token != m.seq:
				bad("message at rev %d has Seq %d, want %d", o.rev, o.token, m.seq)
			}
			if found {
				st.next++
			}
			st.pos = o.rev
			continue
		}
		st.gaps++
		if len(f) < 4 {
			bad("malformed gap %q", o.note)
			continue
		}
		from, _ := strconv.ParseInt(f[1], 10, 64)
		to, _ := strconv.ParseInt(f[2], 10, 64)
		count, _ := strconv.ParseInt(f[3], 10, 64)
		if from <= st.pos || to < from {
			bad("gap [%d, %d] after rev %d: out of order or overlapping", from, to, st.pos)
			continue
		}
		skipTo(from)
		var in int64
		for st.next < len(ms) && ms[st.next].rev <= to {
			if k.topic == psTopic && !ms[st.next].deleted {
				bad("gap [%d, %d] holds the message at rev %d, which retention never deleted", from, to, ms[st.next].rev)
			}
			in++
			st.next++
		}
		st.lost += in
		if count < 0 {
			st.counts++
		} else if count != in {
			bad("gap [%d, %d] counts %d messages, etcd's record has %d there", from, to, count, in)
		}
		if o.token != 0 && o.token != seqAt(k.topic, to) {
			bad("gap [%d, %d] has Seq %d, want %d", from, to, o.token, seqAt(k.topic, to))
		}
		st.pos = to
	}
	for _, o := range c.ops {
		if o.kind == "caughtup" && o.out != ok {
			vs = append(vs, violation{w.name(), fmt.Sprintf("%s did not reach the newest message within %v of the publisher stopping: %s", o.proc, scaled(drainTimeout), o.note), []op{o}})
		}
	}
	var per []string
	msgs := 0
	for _, k := range order {
		st := streams[k]
		msgs += st.msgs
		per = append(per, fmt.Sprintf("%s/%s %d msgs %d gaps (%d lost, %d uncounted)", k.proc, k.topic, st.msgs, st.gaps, st.lost, st.counts))
	}
	vs = append(vs, tooFew(w.name(), "deliveries", msgs)...)
	stats := fmt.Sprintf("published ok=%d unknown=%d (in etcd's record: %s %d, %s %d); subscriptions %d; %s",
		countOps(c.ops, "publish", ok), countOps(c.ops, "publish", unknown), psTopic, len(recs[psTopic]), psLogTopic, len(recs[psLogTopic]),
		countOps(c.ops, "subscribe", ok), strings.Join(per, "; "))
	return stats, vs
}
