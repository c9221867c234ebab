package faults

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The checkers' own tests: hand-made records that break each invariant must
// be caught (and one that keeps it must not be), so a broken checker cannot
// pass a broken recipe.

func put(key, value string, create, rev int64) kvEvent {
	return kvEvent{key: key, value: value, create: create, rev: rev, lease: 1}
}

func del(key string, create, rev int64) kvEvent {
	return kvEvent{del: true, key: key, create: create, rev: rev}
}

func runCheck(w workload, ops []op, events []kvEvent) []violation {
	_, vs := w.check(&checkIn{e: &env{}, ops: ops, events: events, ctx: context.Background()})
	var out []violation
	for _, v := range vs {
		if !strings.Contains(v.msg, "the run checked too little") {
			out = append(out, v)
		}
	}
	return out
}

func wantViolation(t *testing.T, vs []violation, substr string) {
	t.Helper()
	for _, v := range vs {
		if strings.Contains(v.msg, substr) {
			return
		}
	}
	t.Errorf("no violation mentions %q; got %v", substr, vs)
}

func wantNone(t *testing.T, vs []violation) {
	t.Helper()
	if len(vs) > 0 {
		t.Errorf("unexpected violations: %v", vs)
	}
}

func incr(token, rev int64, out outcome) op {
	return op{recipe: "lock", kind: "incr", token: token, rev: rev, out: out}
}

func TestCheckLock(t *testing.T) {
	a, b := lockPrefix+"a", lockPrefix+"b"
	good := []kvEvent{
		put(a, "", 2, 2),
		put(counterKey, "1 2", 3, 3),
		put(resKey, padToken(2), 4, 4),
		put(b, "", 5, 5),
		del(a, 2, 6),
		put(counterKey, "2 5", 3, 7),
		put(resKey, padToken(5), 4, 8),
	}
	wantNone(t, runCheck(&lockWL{}, []op{incr(2, 3, ok), incr(5, 7, ok)}, good))
	t.Run("write by a holder whose key is gone", func(t *testing.T) {
		ev := append(good[:len(good):len(good)], put(counterKey, "3 2", 3, 9))
		vs := runCheck(&lockWL{}, []op{incr(2, 3, ok), incr(5, 7, ok), incr(2, 9, ok)}, ev)
		wantViolation(t, vs, "which did not hold the lock")
	})
	t.Run("lost update", func(t *testing.T) {
		ev := []kvEvent{put(a, "", 2, 2), put(b, "", 3, 3), put(counterKey, "1 2", 4, 4), del(a, 2, 5), put(counterKey, "1 3", 4, 6)}
		vs := runCheck(&lockWL{}, []op{incr(2, 4, ok), incr(3, 6, ok)}, ev)
		wantViolation(t, vs, "a lost or repeated update")
		wantViolation(t, vs, "want between 2 acknowledged")
	})
	t.Run("acknowledged increment missing", func(t *testing.T) {
		vs := runCheck(&lockWL{}, []op{incr(2, 3, ok), incr(5, 7, ok), incr(5, 11, ok)}, good)
		wantViolation(t, vs, "not in etcd's record")
	})
	t.Run("unknown outcomes widen the range", func(t *testing.T) {
		wantNone(t, runCheck(&lockWL{}, []op{incr(2, 3, ok), incr(5, 7, unknown)}, good))
	})
	t.Run("fenced resource accepts a stale token", func(t *testing.T) {
		ev := append(good[:len(good):len(good)], put(resKey, padToken(2), 4, 9))
		vs := runCheck(&lockWL{}, []op{incr(2, 3, ok), incr(5, 7, ok)}, ev)
		wantViolation(t, vs, "accepted stale token 2")
	})
	t.Run("lost after the next holder began", func(t *testing.T) {
		t0 := time.Now()
		ops := []op{incr(2, 3, ok), incr(5, 7, ok),
			{recipe: "lock", kind: "acquire", out: ok, token: 5, start: t0, end: t0},
			{recipe: "lock", kind: "lost", out: ok, token: 2, start: t0.Add(300 * time.Millisecond), valid: t0.Add(time.Second)}}
		// An expiry: the next hold was granted before the holder knew.
		e := &env{t: t, ttl: 2 * time.Second}
		_, vs := (&lockWL{}).check(&checkIn{e: e, ops: ops, events: good, ctx: context.Background()})
		wantViolation(t, vs, "hold 5 was granted 300ms before hold 2 learned it was lost")
		// Granted before the lease's acknowledged TTL, just after a stopped
		// leader resumed: etcd revoked it early, no fault of the client.
		e.leaderResumes = []time.Time{t0.Add(-100 * time.Millisecond)}
		_, vs = (&lockWL{}).check(&checkIn{e: e, ops: ops, events: good, ctx: context.Background()})
		for _, v := range vs {
			if strings.Contains(v.msg, "learned it was lost") {
				t.Errorf("etcd's early revoke counted against the client: %s", v)
			}
		}
		// The same, but granted after the acknowledged TTL: a violation.
		ops[3].valid = t0.Add(-time.Millisecond)
		_, vs = (&lockWL{}).check(&checkIn{e: e, ops: ops, events: good, ctx: context.Background()})
		wantViolation(t, vs, "learned it was lost")
	})
	t.Run("stale revokes a request timeout after a resume", func(t *testing.T) {
		// The resumed leader's revokes after its first 16 land about 5.2 s
		// after it resumed: excused while the lease was still
		// acknowledged valid, and not once the window has passed.
		t0 := time.Now()
		ops := []op{incr(2, 3, ok), incr(5, 7, ok),
			{recipe: "lock", kind: "acquire", out: ok, token: 5, start: t0, end: t0},
			{recipe: "lock", kind: "lost", out: ok, token: 2, start: t0.Add(30 * time.Millisecond), valid: t0.Add(time.Second)}}
		e := &env{t: t, ttl: 2 * time.Second, leaderResumes: []time.Time{t0.Add(-5300 * time.Millisecond)}}
		_, vs := (&lockWL{}).check(&checkIn{e: e, ops: ops, events: good, ctx: context.Background()})
		for _, v := range vs {
			if strings.Contains(v.msg, "learned it was lost") {
				t.Errorf("a stale revoke's second wave counted against the client: %s", v)
			}
		}
		e.leaderResumes = []time.Time{t0.Add(-e.staleRevokeWindow() - time.Millisecond)}
		_, vs = (&lockWL{}).check(&checkIn{e: e, ops: ops, events: good, ctx: context.Background()})
		wantViolation(t, vs, "learned it was lost")
	})
}

func TestCheckSemaphore(t *testing.T) {
	k := func(s string) string { return semPrefix + s }
	slot := func(tok string, rev int64) kvEvent { return put(slotPrefix+tok, tok, rev, rev) }
	ev := []kvEvent{put(k("a"), "", 2, 2), put(k("b"), "", 3, 3), put(k("c"), "", 4, 4),
		slot("2", 5), slot("3", 6), del(k("a"), 2, 7), slot("4", 8)}
	wantNone(t, runCheck(&semWL{}, nil, ev))
	t.Run("more than the limit", func(t *testing.T) {
		ev := []kvEvent{put(k("a"), "", 2, 2), put(k("b"), "", 3, 3), put(k("c"), "", 4, 4),
			slot("2", 5), slot("3", 6), slot("4", 7), slot("2", 8), slot("3", 9)}
		vs := runCheck(&semWL{}, nil, ev)
		wantViolation(t, vs, "not among the first 2")
		wantViolation(t, vs, "3 permits held at once")
	})
}

func TestCheckElection(t *testing.T) {
	a, b := electionPrefix+"a", electionPrefix+"b"
	ev := []kvEvent{put(a, "", 2, 2), put(b, "", 3, 3), put(stateKey, "2", 4, 4), del(a, 2, 5), put(stateKey, "3", 4, 6)}
	wantNone(t, runCheck(&electionWL{}, nil, ev))
	t.Run("deposed leader writes", func(t *testing.T) {
		vs := runCheck(&electionWL{}, nil, append(ev, put(stateKey, "2", 4, 7)))
		wantViolation(t, vs, "when it did not lead")
		wantViolation(t, vs, "two leaders")
	})
}

func TestCheckCheckpoint(t *testing.T) {
	a, b := ckLockPrefix+"a", ckLockPrefix+"b"
	key := ckTask + "/.checkpoint"
	ev := []kvEvent{put(a, "", 2, 2), put(key, "1 2", 3, 3), put(b, "", 4, 4), del(a, 2, 5), put(key, "2 4", 3, 6)}
	wantNone(t, runCheck(&ckWL{}, nil, ev))
	t.Run("progress goes back", func(t *testing.T) {
		vs := runCheck(&ckWL{}, nil, append(ev, put(key, "1 4", 3, 7)))
		wantViolation(t, vs, "progress went 2 -> 1")
	})
	t.Run("stale owner saves", func(t *testing.T) {
		vs := runCheck(&ckWL{}, nil, append(ev, put(key, "3 2", 3, 7)))
		wantViolation(t, vs, "did not hold the task")
	})
}

func TestCheckQueue(t *testing.T) {
	ready := func(id string, rev int64) kvEvent { return put(queuePrefix+"r/ff/0001-"+id, "{}\nitem-"+id, rev, rev) }
	claim := func(id string, rev int64) []kvEvent {
		return []kvEvent{del(queuePrefix+"r/ff/0001-"+id, rev-1, rev), put(queuePrefix+"p/"+id, "{}\nitem-"+id, rev, rev), put(queuePrefix+"c/"+id, "", rev, rev)}
	}
	ack := func(id string, claimRev, rev int64) []kvEvent {
		return []kvEvent{del(queuePrefix+"c/"+id, claimRev, rev), del(queuePrefix+"p/"+id, claimRev, rev)}
	}
	enq := func(id string) op {
		return op{recipe: "queue", kind: "enqueue", out: ok, note: "item-" + id + " " + id}
	}
	var ev []kvEvent
	ev = append(ev, ready("1", 2))
	ev = append(ev, claim("1", 3)...)
	ev = append(ev, ack("1", 3, 4)...)
	wantNone(t, runCheck(&queueWL{}, []op{enq("1")}, ev))
	t.Run("acked twice", func(t *testing.T) {
		ev := append(ev[:len(ev):len(ev)], ready("1", 5))
		ev = append(ev, claim("1", 6)...)
		ev = append(ev, ack("1", 6, 7)...)
		vs := runCheck(&queueWL{}, []op{enq("1")}, ev)
		wantViolation(t, vs, "acknowledged 2 times")
	})
	t.Run("lost", func(t *testing.T) {
		vs := runCheck(&queueWL{}, []op{enq("1"), enq("2")}, ev)
		wantViolation(t, vs, `item "item-2" was enqueued (acknowledged), is not in the queue and was never acked`)
	})
	t.Run("phantom", func(t *testing.T) {
		vs := runCheck(&queueWL{}, nil, ev)
		wantViolation(t, vs, "was never enqueued")
	})
	t.Run("stalled consumer's item not redelivered", func(t *testing.T) {
		ev := append(ev[:len(ev):len(ev)], ready("3", 5))
		ev = append(ev, claim("3", 6)...)
		ev = append(ev, del(queuePrefix+"c/3", 6, 7), del(queuePrefix+"p/3", 6, 8))
		stale := op{recipe: "queue", kind: "ack", out: failed, token: 6, stale: true, note: "item-3 3"}
		vs := runCheck(&queueWL{}, []op{enq("1"), enq("3"), stale}, ev)
		wantViolation(t, vs, "never delivered again")
	})
}

func TestCheckDiscovery(t *testing.T) {
	a, b := "dreg0-0", "dreg0-1"
	ev := []kvEvent{put(discPrefix+a, "{}", 2, 2), put(discPrefix+b, "{}", 3, 3), del(discPrefix+a, 2, 4)}
	t0 := time.Now()
	reg := func(id string, rev int64) op {
		return op{recipe: "discovery", kind: "register", out: ok, note: id, rev: rev, token: rev}
	}
	seen := func(rev int64, d time.Duration) op {
		return op{recipe: "discovery", kind: "witness", out: ok, rev: rev, start: t0.Add(d)}
	}
	view := func(rev int64, d time.Duration, ids ...string) op {
		return op{proc: "dwatch0", recipe: "discovery", kind: "view", out: ok, rev: rev, start: t0.Add(d), note: viewNote(false, ids)}
	}
	base := []op{reg(a, 2), reg(b, 3), {recipe: "discovery", kind: "deregister", out: ok, note: a, token: 2},
		seen(2, 0), seen(3, 10*time.Millisecond), seen(4, 20*time.Millisecond)}
	with := func(more ...op) []op { return append(base[:len(base):len(base)], more...) }
	late := discBound(sessionTTL()) + time.Second
	wantNone(t, runCheck(&discWL{}, with(view(3, 30*time.Millisecond, a, b), view(4, 40*time.Millisecond, b)), ev))
	t.Run("view differs from the record", func(t *testing.T) {
		vs := runCheck(&discWL{}, with(view(4, 40*time.Millisecond, a, b)), ev)
		wantViolation(t, vs, "differs from etcd's record")
	})
	t.Run("instance never registered", func(t *testing.T) {
		vs := runCheck(&discWL{}, with(view(3, 30*time.Millisecond, a, b, "ghost")), ev)
		wantViolation(t, vs, "ghost, which was never registered")
	})
	t.Run("deregistered instance kept too long", func(t *testing.T) {
		vs := runCheck(&discWL{}, with(view(3, late, a, b)), ev)
		wantViolation(t, vs, "phantom dreg0-0, deleted at rev 4")
	})
	t.Run("lag after its own stall is allowed", func(t *testing.T) {
		stall := op{proc: "dwatch0", recipe: "discovery", kind: "stall", out: ok, start: t0, end: t0.Add(late - time.Second)}
		wantNone(t, runCheck(&discWL{}, with(stall, view(3, late, a, b)), ev))
	})
	t.Run("watchers never converge", func(t *testing.T) {
		vs := runCheck(&discWL{}, with(op{recipe: "discovery", kind: "converged", out: failed, note: "dwatch0: view [x]"}), ev)
		wantViolation(t, vs, "did not converge")
	})
	t.Run("registration lost with its lease and not registered again", func(t *testing.T) {
		conv := op{recipe: "discovery", kind: "converged", out: ok, start: t0.Add(2 * late)}
		lostEv := append(ev[:len(ev):len(ev)], del(discPrefix+b, 3, 5))
		vs := runCheck(&discWL{}, with(seen(5, 30*time.Millisecond), conv), lostEv)
		wantViolation(t, vs, "dreg0-1's record was deleted at rev 5 (lease lost) and not registered again")
		back := append(lostEv, put(discPrefix+b, "{}", 6, 6))
		wantNone(t, runCheck(&discWL{}, with(seen(5, 30*time.Millisecond), seen(6, time.Second), conv), back))
		// A failed Register's record, deleted by its clean-up.
		failedReg := op{recipe: "discovery", kind: "register", out: unknown, note: "dreg0-2"}
		cleaned := append(ev[:len(ev):len(ev)], put(discPrefix+"dreg0-2", "{}", 5, 5), del(discPrefix+"dreg0-2", 5, 6))
		wantNone(t, runCheck(&discWL{}, with(failedReg, seen(5, 30*time.Millisecond), seen(6, 40*time.Millisecond), conv), cleaned))
		// Registered again after the bound, but the whole cluster was down
		// for longer than the excess meanwhile: the bound runs while it is up.
		slow := with(seen(5, 30*time.Millisecond), seen(6, late), conv)
		vs = runCheck(&discWL{}, slow, back)
		wantViolation(t, vs, "not registered again")
		e := &env{outages: [][2]time.Time{{t0.Add(time.Second), t0.Add(3 * time.Second)}}}
		_, vs = (&discWL{}).check(&checkIn{e: e, ops: slow, events: back, ctx: context.Background()})
		for _, v := range vs {
			if strings.Contains(v.msg, "not registered again") {
				t.Errorf("an outage of the whole cluster counted against the registry: %s", v)
			}
		}
	})
	t.Run("acknowledged registration missing", func(t *testing.T) {
		vs := runCheck(&discWL{}, with(reg("dreg1-0", 9)), ev)
		wantViolation(t, vs, "registration of dreg1-0 (token 9) is not in etcd's record")
	})
}

func TestCheckPubsub(t *testing.T) {
	m := func(name string) string { return psTopic + "/.m/" + name }
	ev := []kvEvent{put(m("a"), "ps-000000", 2, 2), put(m("b"), "ps-000002", 3, 3), put(m("c"), "ps-000004", 4, 4),
		del(m("a"), 2, 5), put(psTopic+"/.trim", "2 1", 5, 5),
		put(psLogTopic+"/.mode", "log", 6, 6), put(psLogTopic+"/.log", "\x00\x00\x00\x00\x00\x00\x00\x00pl-000001", 6, 6),
		put(psLogTopic+"/.log", "\x00\x00\x00\x00\x00\x00\x00\x00pl-000003", 6, 7)}
	pub := func(topic, data string, rev int64) op {
		return op{recipe: "pubsub", kind: "publish", out: ok, rev: rev, note: topic + " " + data}
	}
	msg := func(topic, data string, rev, seq int64) op {
		return op{proc: "pssub0", recipe: "pubsub", kind: "msg", out: ok, rev: rev, token: seq, note: topic + " " + data}
	}
	gap := func(topic string, from, to, count, seq int64) op {
		return op{proc: "pssub0", recipe: "pubsub", kind: "gap", out: ok, rev: from, token: seq, note: fmt.Sprintf("%s %d %d %d", topic, from, to, count)}
	}
	pubs := []op{pub(psTopic, "ps-000000", 2), pub(psTopic, "ps-000002", 3), pub(psTopic, "ps-000004", 4),
		pub(psLogTopic, "pl-000001", 6), pub(psLogTopic, "pl-000003", 7)}
	with := func(more ...op) []op { return append(pubs[:len(pubs):len(pubs)], more...) }
	good := with(gap(psTopic, 1, 2, 1, 1), msg(psTopic, "ps-000002", 3, 2), msg(psTopic, "ps-000004", 4, 3),
		gap(psLogTopic, 1, 6, 1, 1), msg(psLogTopic, "pl-000003", 7, 2))
	wantNone(t, runCheck(&psWL{}, good, ev))
	t.Run("message skipped silently", func(t *testing.T) {
		vs := runCheck(&psWL{}, with(msg(psTopic, "ps-000002", 3, 2), msg(psTopic, "ps-000004", 4, 3)), ev)
		wantViolation(t, vs, "message at rev 2 (seq 1, \"ps-000000\") skipped silently")
	})
	t.Run("delivered twice", func(t *testing.T) {
		vs := runCheck(&psWL{}, with(gap(psTopic, 1, 2, 1, 1), msg(psTopic, "ps-000002", 3, 2), msg(psTopic, "ps-000002", 3, 2)), ev)
		wantViolation(t, vs, "out of order or twice")
	})
	t.Run("gap miscounted", func(t *testing.T) {
		vs := runCheck(&psWL{}, with(gap(psTopic, 1, 2, 2, 2)), ev)
		wantViolation(t, vs, "counts 2 messages, etcd's record has 1")
		wantViolation(t, vs, "has Seq 2, want 1")
	})
	t.Run("wrong Seq", func(t *testing.T) {
		vs := runCheck(&psWL{}, with(gap(psLogTopic, 1, 6, 1, 1), msg(psLogTopic, "pl-000003", 7, 3)), ev)
		wantViolation(t, vs, "has Seq 3, want 2")
	})
	t.Run("gap over a retained message", func(t *testing.T) {
		vs := runCheck(&psWL{}, with(gap(psTopic, 1, 3, 2, 2)), ev)
		wantViolation(t, vs, "retention never deleted")
	})
	t.Run("phantom message", func(t *testing.T) {
		vs := runCheck(&psWL{}, with(gap(psTopic, 1, 2, 1, 1), msg(psTopic, "ps-000009", 9, 0)), ev)
		wantViolation(t, vs, "not in etcd's record")
	})
	t.Run("wrong data", func(t *testing.T) {
		vs := runCheck(&psWL{}, with(gap(psTopic, 1, 2, 1, 1), msg(psTopic, "ps-000009", 3, 2)), ev)
		wantViolation(t, vs, "etcd's record has \"ps-000002\"")
	})
	t.Run("acknowledged publish missing", func(t *testing.T) {
		vs := runCheck(&psWL{}, append(good, pub(psTopic, "ps-000006", 8)), ev)
		wantViolation(t, vs, "acknowledged publish of \"ps-000006\"")
	})
	t.Run("subscriber never caught up", func(t *testing.T) {
		vs := runCheck(&psWL{}, append(good, op{proc: "pssub1", recipe: "pubsub", kind: "caughtup", out: failed, note: "ps at 3, newest message 4"}), ev)
		wantViolation(t, vs, "did not reach the newest message")
	})
}

func TestCheckBarrier(t *testing.T) {
	a, b, c := dbParts+"a", dbParts+"b", dbParts+"c"
	good := []kvEvent{
		put(a, "e:a", 2, 2), put(b, "e:b", 3, 3), put(dbReady, "", 4, 4),
		put(c, "e:c", 5, 5), // a latecomer joins the round
		put(a, "l:a", 2, 6), put(b, "l:b", 3, 7), put(c, "l:c", 5, 8),
		del(dbReady, 4, 9), del(a, 2, 10), del(b, 3, 11), del(c, 5, 12),
	}
	wantNone(t, runCheck(&dbWL{}, nil, good))
	t.Run("ready too early", func(t *testing.T) {
		vs := runCheck(&dbWL{}, nil, []kvEvent{put(a, "e:a", 2, 2), put(dbReady, "", 3, 3)})
		wantViolation(t, vs, "with 1 participants entered")
	})
	t.Run("round ended while working", func(t *testing.T) {
		vs := runCheck(&dbWL{}, nil, []kvEvent{put(a, "e:a", 2, 2), put(b, "e:b", 3, 3), put(dbReady, "", 4, 4), put(a, "l:a", 2, 5), del(dbReady, 4, 6)})
		wantViolation(t, vs, "still working")
	})
	t.Run("passed Enter without a ready round", func(t *testing.T) {
		vs := runCheck(&dbWL{}, []op{{proc: "x", kind: "entered-read", out: ok, rev: 7, note: "own=true ready=false"}}, good)
		wantViolation(t, vs, "was not ready")
	})
}

func TestCheckCounter(t *testing.T) {
	add := func(n, rev int64, out outcome) op {
		return op{recipe: "counter", kind: "add", out: out, rev: rev, note: strconv.FormatInt(n, 10)}
	}
	seen := func(n, rev int64, resync bool) op {
		o := op{recipe: "counter", kind: "seen", out: ok, rev: rev, note: strconv.FormatInt(n, 10)}
		if resync {
			o.note += " resync"
		}
		return o
	}
	good := []kvEvent{put(ctKey, "1", 2, 2), put(ctKey, "2", 2, 3), put(ctKey, "3", 2, 4)}
	ops := []op{add(1, 2, ok), add(2, 3, ok), add(3, 4, unknown), seen(0, 0, false), seen(1, 2, false), seen(2, 3, false), seen(3, 4, false)}
	wantNone(t, runCheck(&ctWL{}, ops, good))
	t.Run("lost update", func(t *testing.T) {
		ev := []kvEvent{put(ctKey, "1", 2, 2), put(ctKey, "1", 2, 3)}
		wantViolation(t, runCheck(&ctWL{}, []op{add(1, 2, ok), add(1, 3, ok)}, ev), "a lost or repeated update")
	})
	t.Run("acknowledged add missing", func(t *testing.T) {
		wantViolation(t, runCheck(&ctWL{}, []op{add(1, 2, ok), add(2, 3, ok), add(3, 4, ok), add(4, 9, ok)}, good), "not in etcd's record")
	})
	t.Run("watcher skipped a value", func(t *testing.T) {
		vs := runCheck(&ctWL{}, []op{add(1, 2, ok), add(2, 3, ok), add(3, 4, ok), seen(1, 2, false), seen(3, 4, false)}, good)
		wantViolation(t, vs, "skipped or repeated")
	})
	t.Run("watcher repeated a value", func(t *testing.T) {
		vs := runCheck(&ctWL{}, []op{add(1, 2, ok), add(2, 3, ok), add(3, 4, ok), seen(1, 2, false), seen(2, 3, false), seen(2, 3, false)}, good)
		wantViolation(t, vs, "skipped or repeated")
	})
	t.Run("a resync may skip", func(t *testing.T) {
		wantNone(t, runCheck(&ctWL{}, []op{add(1, 2, ok), add(2, 3, ok), add(3, 4, ok), seen(1, 2, false), seen(3, 4, true)}, good))
	})
}

func TestCheckMultiLock(t *testing.T) {
	a0, b0 := mlLinePrefix(0)+"a", mlLinePrefix(0)+"b"
	a1 := mlLinePrefix(1) + "a"
	good := []kvEvent{
		put(a0, "", 2, 2), put(a1, "", 3, 3), put(b0, "", 4, 4),
		put(mlResKey(mlName(0)), "2", 5, 5), put(mlResKey(mlName(1)), "3", 6, 5),
		del(a0, 2, 6), del(a1, 3, 6), put(mlResKey(mlName(0)), "4", 5, 7),
	}
	wantNone(t, runCheck(&mlWL{}, nil, good))
	t.Run("stale holder writes", func(t *testing.T) {
		ev := append(good[:len(good):len(good)], put(mlResKey(mlName(0)), "2", 5, 8))
		wantViolation(t, runCheck(&mlWL{}, nil, ev), "did not hold the lock")
	})
}

func TestCheckRollout(t *testing.T) {
	claim := roClaims + "h000/.lock/a"
	claim2 := roClaims + "h000/.lock/b"
	cp := "ro/rollout/progress/h000/.checkpoint"
	data := func(step int, tok, rev int64) kvEvent {
		return put(roData+"h000/"+strconv.Itoa(step), strconv.FormatInt(tok, 10), rev, rev)
	}
	doneRec := func(tok, rev int64) kvEvent {
		return put(roCtlT+"h000", `{"state":"done","wave":0,"token":`+strconv.FormatInt(tok, 10)+`}`, 1, rev)
	}
	good := []kvEvent{
		put(roWaveKey, "0", 1, 1),
		put(claim, "", 2, 2), data(0, 2, 3), put(cp, "0", 4, 4),
		data(1, 2, 5), // lost before its checkpoint: the step runs again
		del(claim, 2, 6), put(claim2, "", 7, 7), data(1, 7, 8), put(cp, "1", 4, 9),
		doneRec(7, 10), del(cp, 4, 10), put(roWaveKey, "1", 1, 11),
	}
	wantNone(t, runCheck(&roWL{}, nil, good))
	t.Run("completed step repeated", func(t *testing.T) {
		ev := []kvEvent{put(claim, "", 2, 2), data(0, 2, 3), put(cp, "0", 4, 4), data(0, 2, 5)}
		wantViolation(t, runCheck(&roWL{}, nil, ev), "a completed step repeated")
	})
	t.Run("stale worker writes", func(t *testing.T) {
		ev := []kvEvent{put(claim, "", 2, 2), del(claim, 2, 3), put(claim2, "", 4, 4), data(0, 2, 5)}
		wantViolation(t, runCheck(&roWL{}, nil, ev), "did not hold the target")
	})
	t.Run("done twice", func(t *testing.T) {
		ev := append(good[:len(good):len(good)], put(claim2+"x", "", 12, 12), doneRec(12, 13))
		wantViolation(t, runCheck(&roWL{}, nil, ev), "recorded done 2 times")
	})
	t.Run("target taken while paused", func(t *testing.T) {
		ev := []kvEvent{put(roState, `{"state":"paused"}`, 1, 1), put(claim, "", 2, 2), data(0, 2, 3)}
		wantViolation(t, runCheck(&roWL{}, nil, ev), "taken while paused")
		ev = []kvEvent{put(roState, `{"state":"paused"}`, 1, 1), put(claim, "", 2, 2), put(roState, `{"state":"running"}`, 1, 3), data(0, 2, 4)}
		wantNone(t, runCheck(&roWL{}, nil, ev))
	})
	t.Run("wave opened twice", func(t *testing.T) {
		ev := append(good[:len(good):len(good)], put(roWaveKey, "1", 1, 12))
		wantViolation(t, runCheck(&roWL{}, nil, ev), "not once each")
	})
	t.Run("more than K in flight", func(t *testing.T) {
		var ev []kvEvent
		for i := range 3 {
			id := fmt.Sprintf("h%03d", i)
			ev = append(ev, put(roClaims+id+"/.lock/a", "", int64(10+i), int64(10+i)))
		}
		for i := range 3 {
			id := fmt.Sprintf("h%03d", i)
			ev = append(ev, put(roData+id+"/0", strconv.Itoa(10+i), int64(20+i), int64(20+i)))
		}
		for i := range 3 {
			id := fmt.Sprintf("h%03d", i)
			ev = append(ev, put(roData+id+"/1", strconv.Itoa(10+i), int64(30+i), int64(30+i)))
		}
		vs := runCheck(&roWL{}, nil, ev)
		wantViolation(t, vs, "targets in flight")
	})
}
