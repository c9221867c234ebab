package console_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/pubsub"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

func TestEmptyPrefix(t *testing.T) {
	srv := embedtest.Start(t)
	_, ts, _ := serve(t, srv.Client, console.WithPrefix("nothing/here/"))
	code, page := get(t, ts.URL+"/")
	if code != 200 {
		t.Fatalf("GET / = %d", code)
	}
	for id, want := range map[string]string{"sessions": "No session", "locks": "No locks.", "elections": "No elections.",
		"semaphores": "No semaphores.", "queues": "No queues.", "services": "No services.", "topics": "No topics.", "checkpoints": "No checkpoints."} {
		if s := section(page, id); !strings.Contains(s, want) {
			t.Errorf("section %s of an empty prefix = %q, want %q", id, text(s), want)
		}
	}
	waitSection(t, ts, "cluster", 10*time.Second, containsAll("connected to etcd", "leader", "revision"))
}

// TestEveryView fills each recipe and checks what its section shows.
func TestEveryView(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	_, ts, _ := serve(t, srv.Client)

	// A lock: a holder and two waiters, in order.
	holder := newSession(t, srv.Client)
	m, err := lock.NewMutex(holder, "jobs/nightly", lock.WithValue("worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"worker-2", "worker-3"} {
		w, err := lock.NewMutex(newSession(t, srv.Client), "jobs/nightly", lock.WithValue(v))
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = w.Lock(ctx) }()
		waitLine(t, ctx, srv.Client, "jobs/nightly", v)
	}
	locks := waitSection(t, ts, "locks", 10*time.Second, containsAll("worker-1", "worker-2", "worker-3"))
	if h := section(locks, "locks"); !strings.Contains(text(h), "jobs/nightly") {
		t.Fatalf("locks section names no lock: %s", text(h))
	}
	if i1, i2, i3 := strings.Index(locks, "worker-1"), strings.Index(locks, "worker-2"), strings.Index(locks, "worker-3"); !(i1 < i2 && i2 < i3) {
		t.Fatalf("holder and waiters out of order: %s", text(locks))
	}
	if !strings.Contains(locks, `class="holders"`) || strings.Count(locks, `class="waiter"`) != 2 {
		t.Fatalf("want one holder list and two waiters: %s", locks)
	}
	if !strings.Contains(locks, "token "+itoa(m.Token())) {
		t.Fatalf("holder's token %d not shown: %s", m.Token(), text(locks))
	}
	// The sessions view says what each lease holds or waits for.
	sessions := waitSection(t, ts, "sessions", 10*time.Second, containsAll(leaseHex(holder.Lease()), "holds lock jobs/nightly", "waits for lock jobs/nightly (#2)"))
	waitSection(t, ts, "sessions", 10*time.Second, containsAll(`class="until"`))
	if strings.Contains(sessions, "Revoke") {
		t.Fatalf("revoke button shown with actions off: %s", sessions)
	}

	// An election: a leader and a candidate behind it.
	lead, err := election.New(newSession(t, srv.Client), "rollout/coordinator")
	if err != nil {
		t.Fatal(err)
	}
	term, err := lead.Campaign(ctx, "coord-a")
	if err != nil {
		t.Fatal(err)
	}
	cand, err := election.New(newSession(t, srv.Client), "rollout/coordinator")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = cand.Campaign(ctx, "coord-b") }()
	elections := waitSection(t, ts, "elections", 10*time.Second, containsAll("coord-a", "coord-b", "token "+itoa(term.Token())))
	if strings.Index(elections, "coord-a") > strings.Index(elections, "coord-b") || !strings.Contains(elections, `class="leader"`) {
		t.Fatalf("leader not first: %s", text(elections))
	}

	// A semaphore: limit 2, two holders, one waiter.
	for _, v := range []string{"host-1", "host-2", "host-3"} {
		sem, err := semaphore.New(newSession(t, srv.Client), "rollout/upgrades", 2, semaphore.WithValue(v))
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, sem)
		go func() { _, _ = sem.Acquire(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := semaphore.Inspect(ctx, srv.Client, "rollout/upgrades")
			if err == nil && len(st.Holders)+len(st.Waiters) == map[string]int{"host-1": 1, "host-2": 2, "host-3": 3}[v] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not in line: %+v %v", v, st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sems := waitSection(t, ts, "semaphores", 10*time.Second, containsAll("2 of 2 permits held", "host-1", "host-2", "host-3"))
	if !(strings.Index(sems, "host-2") < strings.Index(sems, "waiting, in order") && strings.Index(sems, "waiting, in order") < strings.Index(sems, "host-3")) {
		t.Fatalf("host-3 should wait behind two holders: %s", text(sems))
	}

	// A queue: ready items by priority, a delayed one, a claimed one and a dead letter.
	q, err := queue.New(srv.Client, "rollout/hosts", queue.WithMaxDeliveries(1))
	if err != nil {
		t.Fatal(err)
	}
	mustEnqueue := func(p string, opts ...queue.EnqueueOption) string {
		id, err := q.Enqueue(ctx, []byte(p), opts...)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	consumer := newSession(t, srv.Client)
	dead := mustEnqueue("poison")
	c1, err := q.Consumer(consumer).TryClaim(ctx)
	if err != nil || c1.ID() != dead {
		t.Fatalf("claim = %v %v", c1, err)
	}
	if err := c1.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Consumer(consumer).TryClaim(ctx); !errors.Is(err, queue.ErrEmpty) {
		t.Fatalf("claim of an exhausted item = %v, want ErrEmpty", err)
	}
	claimed := mustEnqueue("host-a")
	if c, err := q.Consumer(consumer).TryClaim(ctx); err != nil || c.ID() != claimed {
		t.Fatalf("claim = %v %v", c, err)
	}
	low := mustEnqueue("host-low", queue.WithPriority(1))
	high := mustEnqueue("host-high", queue.WithPriority(9))
	later := mustEnqueue("host-later", queue.WithDelay(time.Hour))
	queues := waitSection(t, ts, "queues", 10*time.Second, containsAll("2 ready", "1 delayed", "1 claimed", "1 dead", later, dead))
	if strings.Index(queues, high) > strings.Index(queues, low) {
		t.Fatalf("ready items not by priority: %s", text(queues))
	}
	if !strings.Contains(queues, "lease "+leaseHex(consumer.Lease())) || strings.Contains(queues, "Requeue") {
		t.Fatalf("claimed item should name its consumer's lease, and no action shown: %s", text(queues))
	}
	waitSection(t, ts, "sessions", 10*time.Second, containsAll("claims item "+claimed+" of queue rollout/hosts"))

	// Services: two instances, one draining, under one registry's lease.
	reg, err := discovery.NewRegistry(srv.Client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })
	if _, err := reg.Register(ctx, "payments", discovery.Instance{ID: "p1", Addr: "10.0.0.7:7001", Metadata: map[string]string{"zone": "eu-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, "payments", discovery.Instance{ID: "p2", Addr: "10.0.0.8:7001", Draining: true}); err != nil {
		t.Fatal(err)
	}
	waitSection(t, ts, "services", 10*time.Second, containsAll("payments", "2 instances", "1 draining", "1 lease", "10.0.0.7:7001", "zone=eu-1", `class="draining"`))

	// A topic: retention and the last message.
	ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(10))
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"deploy v41", "deploy v42"} {
		if _, err := ps.Publish(ctx, "events/deploys", []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	waitSection(t, ts, "topics", 10*time.Second, containsAll("events/deploys", "2 kept", "last message #2", "deploy v42"))

	// A checkpoint.
	if _, err := srv.Client.Put(ctx, checkpoint.Key("upgrade/host-a"), "step 3 of 5"); err != nil {
		t.Fatal(err)
	}
	waitSection(t, ts, "checkpoints", 10*time.Second, containsAll("upgrade/host-a", "step 3 of 5"))

	// The lock released: the next waiter holds it, the page follows.
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	locks = waitSection(t, ts, "locks", 10*time.Second, func(s string) bool { return !strings.Contains(s, "worker-1") })
	if strings.Index(locks, "worker-2") > strings.Index(locks, "waiting, in order") {
		t.Fatalf("worker-2 should hold the lock now: %s", text(locks))
	}
}

// waitLine waits until value is in line for the lock name.
func waitLine(t *testing.T, ctx context.Context, c *clientv3.Client, name, value string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := lock.Inspect(ctx, c, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range st.Waiters {
			if e.Value == value {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not waiting for %s within 10s: %+v", value, name, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func itoa[T ~int64](n T) string { return strconv.FormatInt(int64(n), 10) }

func leaseHex(id clientv3.LeaseID) string { return strconv.FormatInt(int64(id), 16) }
