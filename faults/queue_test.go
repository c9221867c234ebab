package faults

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/queue"
)

const (
	queueName   = "qu"
	claimPrefix = "qu/.q/c/"
)

// queueWL: one producer enqueues numbered items; consumers claim and ack
// them. A consumer stalled past its lease tries to ack its old claim after
// resuming; the item must have gone to someone else.
type queueWL struct {
	producer  *proc
	consumers []*proc
	prog      atomic.Int64

	mu       sync.Mutex
	stopProd context.CancelFunc
	left     int64
}

func (w *queueWL) name() string { return "queue" }

func (w *queueWL) setup(e *env) {
	w.producer = e.newProc(w.name(), "qprod")
	w.producer.stallable = false
	for i := range 2 {
		w.consumers = append(w.consumers, e.newProc(w.name(), fmt.Sprintf("qcons%d", i)))
	}
}

func (w *queueWL) progress() int64 { return w.prog.Load() }

func (w *queueWL) run(ctx context.Context, e *env, wg *sync.WaitGroup) {
	pctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	w.stopProd = cancel
	w.mu.Unlock()
	wg.Go(func() { w.produce(pctx, e) })
	for _, p := range w.consumers {
		wg.Go(func() { w.consume(ctx, e, p) })
	}
}

func (w *queueWL) produce(ctx context.Context, e *env) {
	p := w.producer
	q, err := queue.New(p.client, queueName)
	if err != nil {
		e.t.Errorf("queue: %v", err)
		return
	}
	for n := 0; n < 100000 && ctx.Err() == nil; n++ {
		payload := fmt.Sprintf("item-%06d", n)
		start := time.Now()
		octx, cancel := opCtx(ctx)
		id, err := q.Enqueue(octx, []byte(payload))
		cancel()
		o := op{proc: p.name, recipe: w.name(), kind: "enqueue", start: start, out: ok, note: payload + " " + id}
		if err != nil {
			o.out, o.note = unknown, payload+" "+err.Error()
		}
		e.hist.add(o)
		sleepCtx(ctx, 25*time.Millisecond)
	}
}

func (w *queueWL) consume(ctx context.Context, e *env, p *proc) {
	q, err := queue.New(p.client, queueName)
	if err != nil {
		e.t.Errorf("queue: %v", err)
		return
	}
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		s, err := newSession(ctx, e, p)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		// next is an item AckNext claimed with the last ack.
		var next *queue.Claim
		var nextAt time.Time
		for j := 0; j < 100000 && ctx.Err() == nil && s.Err() == nil; j++ {
			start := time.Now()
			c := next
			if c != nil {
				start, next = nextAt, nil
			} else {
				cctx, cancel := context.WithTimeout(ctx, scaled(waitTimeout))
				c, err = q.Consumer(s).Claim(cctx)
				cancel()
				if err != nil {
					sleepCtx(ctx, 20*time.Millisecond) // do not spin on quick errors
					continue
				}
			}
			payload := string(c.Payload())
			e.hist.add(op{proc: p.name, recipe: w.name(), kind: "claim", start: start, out: ok, token: int64(c.Token()),
				note: payload + " " + c.ID() + fmt.Sprintf(" attempt %d", c.Attempts())})
			p.holding.Store(true)
			stale := p.park(ctx)
			// Ack is idempotent: retry while its outcome is unknown, or the
			// item would stay claimed by a live session that forgot it.
			// Every other item's first try is AckNext, which may claim the
			// next item with it.
			for k := 0; k < 5 && ctx.Err() == nil; k++ {
				start = time.Now()
				actx, cancel := opCtx(ctx)
				if k == 0 && j%2 == 1 {
					next, err = c.AckNext(actx)
					if errors.Is(err, queue.ErrEmpty) {
						err = nil // acked, nothing claimed
					} else if err != nil {
						next = nil
					}
					nextAt = start
				} else {
					err = c.Ack(actx)
				}
				cancel()
				o := op{proc: p.name, recipe: w.name(), kind: "ack", start: start, out: classify(err), token: int64(c.Token()), note: payload + " " + c.ID(), stale: stale}
				if err == nil {
					w.prog.Add(1)
				} else {
					o.note += " " + err.Error()
				}
				e.hist.add(o)
				if o.out != unknown {
					break
				}
			}
			p.holding.Store(false)
		}
		if next != nil {
			// The session ended with an item AckNext claimed: it was
			// delivered, and goes back when the session's lease ends.
			e.hist.add(op{proc: p.name, recipe: w.name(), kind: "claim", start: nextAt, out: ok, token: int64(next.Token()),
				note: string(next.Payload()) + " " + next.ID() + fmt.Sprintf(" attempt %d", next.Attempts())})
		}
		closeSession(s)
	}
}

// drain stops the producer and waits until the consumers have emptied the
// queue (or the drain timeout passes: what is left is accounted for).
func (w *queueWL) drain(ctx context.Context, e *env) {
	w.mu.Lock()
	w.stopProd()
	w.mu.Unlock()
	q, err := queue.New(e.admin, queueName)
	if err != nil {
		return
	}
	pollUntil(ctx, scaled(drainTimeout), func() bool {
		octx, cancel := opCtx(ctx)
		defer cancel()
		n, err := q.Len(octx)
		if err == nil {
			w.mu.Lock()
			w.left = n
			w.mu.Unlock()
		}
		return err == nil && n == 0
	})
}

func payloadOf(o op) string { p, _, _ := strings.Cut(o.note, " "); return p }

const queuePrefix = "qu/.q/"

// itemKey parses a queue key into its directory and item id ("" for keys
// that are not items').
func itemKey(key string) (dir, id string) {
	rest, ok := strings.CutPrefix(key, queuePrefix)
	if !ok {
		return "", ""
	}
	dir, rest, _ = strings.Cut(rest, "/")
	switch dir {
	case "r", "d":
		if i := strings.LastIndexByte(rest, '-'); i >= 0 {
			return dir, rest[i+1:]
		}
	case "p", "c", "x":
		return dir, rest
	case "o": // o/<lease>/<id>: the claimed item, as p/<id> was
		if i := strings.LastIndexByte(rest, '/'); i >= 0 {
			return "p", rest[i+1:]
		}
	}
	return "", ""
}

// qItem is one item's story in etcd's record.
type qItem struct {
	payload string
	acks    []int64 // revisions at which it was acknowledged
	ackedBy []int64 // the claim tokens of those acks
	claims  []int64 // create revisions of its claims
	lastPut int64
}

// queueRecord reads every item's story from etcd's record: an ack is a
// revision that deletes the item's pending copy and its claim and puts it
// nowhere (a Nack or a requeue puts it back in line).
func queueRecord(events []kvEvent) map[string]*qItem {
	items := map[string]*qItem{}
	get := func(id string) *qItem {
		if items[id] == nil {
			items[id] = &qItem{}
		}
		return items[id]
	}
	type revID struct {
		rev int64
		id  string
	}
	type change struct {
		pendingDel, claimDel, placed bool
		claimTok                     int64
	}
	byRev := map[revID]*change{}
	var order []revID
	for _, e := range events {
		dir, id := itemKey(e.key)
		if id == "" {
			continue
		}
		it := get(id)
		if !e.del {
			it.lastPut = e.rev
			if _, p, found := strings.Cut(e.value, "\n"); found && dir != "c" {
				it.payload = p
			}
			if dir == "c" {
				it.claims = append(it.claims, e.create)
			}
		}
		k := revID{e.rev, id}
		ch := byRev[k]
		if ch == nil {
			ch = &change{}
			byRev[k] = ch
			order = append(order, k)
		}
		switch {
		case e.del && dir == "p":
			ch.pendingDel = true
		case e.del && dir == "c":
			ch.claimDel, ch.claimTok = true, e.create
		case !e.del && (dir == "r" || dir == "d" || dir == "x"):
			ch.placed = true
		}
	}
	for _, k := range order {
		ch := byRev[k]
		if ch.pendingDel && ch.claimDel && !ch.placed {
			it := items[k.id]
			it.acks = append(it.acks, k.rev)
			it.ackedBy = append(it.ackedBy, ch.claimTok)
		}
	}
	return items
}

func (w *queueWL) check(c *checkIn) (string, []violation) {
	var vs []violation
	var st queue.Status
	if c.e.admin != nil { // nil in the checkers' own tests
		octx, cancel := opCtx(c.ctx)
		var err error
		st, err = queue.Inspect(octx, c.e.admin, queueName)
		cancel()
		if err != nil {
			return "", []violation{{w.name(), "inspect at the end: " + err.Error(), nil}}
		}
	}
	inQueue := map[string]string{} // id -> state at the end
	for state, items := range map[string][]queue.Item{"ready": st.Ready, "delayed": st.Delayed, "claimed": st.Claimed, "orphaned": st.Orphaned, "dead": st.Dead} {
		for _, it := range items {
			inQueue[it.ID] = state
		}
	}
	rec := queueRecord(c.events)
	byPayload := map[string][]string{}
	for id, it := range rec {
		byPayload[it.payload] = append(byPayload[it.payload], id)
	}
	opsOf := map[string][]op{}
	enqueued := map[string]outcome{}
	for _, o := range c.ops {
		p := payloadOf(o)
		opsOf[p] = append(opsOf[p], o)
		if o.kind == "enqueue" {
			if prev, seen := enqueued[p]; !seen || prev != ok {
				enqueued[p] = o.out
			}
		}
	}
	lost, twice, phantom, acked := 0, 0, 0, 0
	for id, it := range rec {
		state, queued := inQueue[id]
		if _, issued := enqueued[it.payload]; !issued {
			phantom++
			vs = append(vs, violation{w.name(), fmt.Sprintf("item %s (%q) is in etcd's record but was never enqueued", id, it.payload), opsOf[it.payload]})
		}
		switch {
		case len(it.acks) > 1:
			twice++
			vs = append(vs, violation{w.name(), fmt.Sprintf("item %s (%q) was acknowledged %d times, at revs %v by claims %v", id, it.payload, len(it.acks), it.acks, it.ackedBy), opsOf[it.payload]})
		case len(it.acks) == 1 && (queued || it.lastPut > it.acks[0]):
			vs = append(vs, violation{w.name(), fmt.Sprintf("item %s (%q) came back after its ack at rev %d (now %q)", id, it.payload, it.acks[0], state), opsOf[it.payload]})
		case len(it.acks) == 1:
			acked++
		}
	}
	// Every acknowledged enqueue is acked once or still queued.
	for p, out := range enqueued {
		if out != ok {
			continue
		}
		found := false
		for _, id := range byPayload[p] {
			_, queued := inQueue[id]
			found = found || queued || len(rec[id].acks) > 0
		}
		if !found {
			lost++
			vs = append(vs, violation{w.name(), fmt.Sprintf("item %q was enqueued (acknowledged), is not in the queue and was never acked: lost; etcd's record of it: %v; queue at the end: %d ready, %d claimed, %d orphaned, %d dead",
				p, recordOf(c.events, p, opsOf[p]), len(st.Ready), len(st.Claimed), len(st.Orphaned), len(st.Dead)), opsOf[p]})
		}
	}
	// Every ack a consumer saw succeed is in the record, by its claim.
	for _, o := range c.ops {
		if o.kind != "ack" || o.out != ok {
			continue
		}
		_, id, _ := strings.Cut(o.note, " ")
		id, _, _ = strings.Cut(id, " ")
		if it := rec[id]; it == nil || !slices.Contains(it.ackedBy, o.token) {
			vs = append(vs, violation{w.name(), "an acknowledged ack is not in etcd's record", []op{o}})
		}
	}
	// A stalled consumer's item went to another consumer, or its own ack
	// landed (its lease outlived the stall), or it is still queued.
	stalled, redelivered := 0, 0
	seen := map[string]bool{}
	for _, o := range c.ops {
		if o.kind != "ack" || !o.stale {
			continue
		}
		_, id, _ := strings.Cut(o.note, " ")
		id, _, _ = strings.Cut(id, " ")
		if seen[id] {
			continue
		}
		seen[id] = true
		stalled++
		it := rec[id]
		if it == nil {
			continue
		}
		again := slices.ContainsFunc(it.claims, func(t int64) bool { return t > o.token })
		_, queued := inQueue[id]
		switch {
		case again:
			redelivered++
		case slices.Contains(it.ackedBy, o.token), queued:
		default:
			vs = append(vs, violation{w.name(), fmt.Sprintf("item %s of a stalled consumer (claim %d) was never delivered again", id, o.token), opsOf[it.payload]})
		}
	}
	// Claims in etcd's record that no consumer received: a Claim call that
	// failed (a timeout while its claim was in flight) but whose claim
	// landed. The item stays with the caller's session, undelivered, until
	// that session ends (see TestQueueFailedClaimLeavesNoClaim).
	received := map[int64]bool{}
	for _, o := range c.ops {
		if o.kind == "claim" {
			received[o.token] = true
		}
	}
	unreceived := 0
	var longest int64
	for _, l := range lives(c.events, queuePrefix+"c/") {
		if !received[l.create] {
			unreceived++
			if l.end > 0 {
				longest = max(longest, l.end-l.create)
			}
		}
	}
	n := countOps(c.ops, "ack", ok)
	vs = append(vs, tooFew(w.name(), "acknowledgements", n)...)
	w.mu.Lock()
	left := w.left
	w.mu.Unlock()
	stats := fmt.Sprintf("enqueued ok=%d unknown=%d, claims=%d, acks ok=%d unknown=%d failed=%d, acked in etcd's record %d, left in queue %d (dead %d), lost %d, acked twice %d, phantom %d; stalled consumers' items %d, redelivered %d, stale acks landed %d; claims no consumer received %d (held for up to %d revisions)",
		countOps(c.ops, "enqueue", ok), countOps(c.ops, "enqueue", unknown), countOps(c.ops, "claim", ok),
		n, countOps(c.ops, "ack", unknown), countOps(c.ops, "ack", failed), acked, left, len(st.Dead), lost, twice, phantom,
		stalled, redelivered, staleLanded(c.ops, "ack"), unreceived, longest)
	return stats, vs
}

// recordOf lists the events of etcd's record that mention payload p or the
// ids its operations name.
func recordOf(events []kvEvent, p string, ops []op) []string {
	ids := map[string]bool{}
	for _, o := range ops {
		if f := strings.Fields(o.note); len(f) > 1 {
			ids[f[1]] = true
		}
	}
	var out []string
	for _, e := range events {
		_, id := itemKey(e.key)
		if ids[id] || (p != "" && strings.HasSuffix(e.value, "\n"+p)) {
			what := "put"
			if e.del {
				what = "del"
			}
			out = append(out, fmt.Sprintf("%s %s@%d(create %d lease %x)", what, e.key, e.rev, e.create, e.lease))
		}
	}
	return out
}
